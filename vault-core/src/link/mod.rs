//! The vault NIC: when it may be up ([`gate`], driven by the schedule, commits, alarms and
//! netlink confirmations) and what it may send while it is ([`egress`]).

pub mod egress;
pub mod gate;
