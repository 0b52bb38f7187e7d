//! `vaultctl order`: holds, releases, purges, vetoes and exports as signed orders for the vault's stick
//! (see `vault_core::policy::orders`). `new` writes an unsigned order, each admin `sign`s it on
//! their own machine, and it goes on the stick as `vault-orders/<name>.order`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use vault_core::policy::bundle::{Envelope, JudgedAt, MAX_BUNDLE_BYTES};
use vault_core::policy::orders::{self, DatasetDoc, ExportSpec, Order, OrderDoc, OrderKind, OrderState, PendingPurge, ORDER_PAYLOAD_TYPE, ORDER_SIGNING_CONTEXT};
use vault_core::policy::root::TrustRoot;
use vault_core::units::{Duration, Timestamp};

use crate::error::{CliError, Result};
use crate::{keyfile, load_root, not_an_admin, out_file, signer_name, time_arg};

#[derive(Subcommand)]
pub enum OrderCommand {
    /// Writes an unsigned order: what it names, why, and until when it may take effect.
    New(OrderNew),
    /// Adds one admin's signature to an order.
    Sign {
        /// The signing admin's secret key (NAME.key).
        #[arg(long)]
        key: PathBuf,
        /// The trust root in force (the key must be one of its admins).
        #[arg(long)]
        root: PathBuf,
        order: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Shows what an order says and who signed it, without verifying it.
    Show { order: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Hold,
    Release,
    Purge,
    Veto,
    Export,
}

#[derive(Args)]
pub struct OrderNew {
    #[arg(long, value_enum)]
    kind: Kind,
    /// Above the last accepted order of this kind (the vault refuses anything else).
    #[arg(long)]
    serial: u64,
    /// The trust root in force (the order names its digest and vault id).
    #[arg(long)]
    root: PathBuf,
    /// A snapshot the order names (repeat).
    #[arg(long = "snapshot")]
    snapshots: Vec<String>,
    /// A dataset the order names, as PUSHER/DATASET (repeat).
    #[arg(long = "dataset")]
    datasets: Vec<String>,
    /// For a veto: the purge order it cancels (the id `order show` prints).
    #[arg(long)]
    vetoes: Option<String>,
    /// For an export: the medium's id (`vaultctl media init` prints it).
    #[arg(long)]
    medium: Option<String>,
    /// For an export: an `age` recipient (`age1...`) to encrypt to (repeat).
    #[arg(long = "recipient")]
    recipients: Vec<String>,
    /// For an export: of each --dataset, the newest N snapshots (default 1, or all since --since).
    #[arg(long)]
    newest: Option<u32>,
    /// For an export: of each --dataset, only snapshots received at or after this (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Why (one line; it is on the vault's console and in its events).
    #[arg(long)]
    reason: String,
    /// How long from now it may take effect (a purge must outlast the root's purge_delay).
    #[arg(long, default_value = "14d")]
    valid_for: String,
    /// Issue time (RFC 3339); default now.
    #[arg(long)]
    issued: Option<String>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: OrderCommand, json: bool) -> Result<()> {
    match command {
        OrderCommand::New(args) => new(args, json),
        OrderCommand::Sign { key, root, order, out } => sign(&key, &root, &order, &out, json),
        OrderCommand::Show { order } => show(&order, json),
    }
}

fn new(args: OrderNew, json: bool) -> Result<()> {
    out_file(&args.out, "NAME.order")?;
    let root = load_root(&args.root)?;
    let issued = time_arg(args.issued.as_deref(), "--issued")?;
    let valid_for = Duration::parse(&args.valid_for).map_err(|e| CliError::Usage(format!("--valid-for: {e}")))?;
    let datasets = args
        .datasets
        .iter()
        .map(|d| {
            let (pusher, dataset) = d.split_once('/').ok_or_else(|| CliError::Usage(format!("--dataset {d}: write it PUSHER/DATASET")))?;
            Ok(DatasetDoc { pusher: pusher.into(), dataset: dataset.into() })
        })
        .collect::<Result<Vec<_>>>()?;
    let kind = match args.kind {
        Kind::Hold => OrderKind::Hold,
        Kind::Release => OrderKind::Release,
        Kind::Purge => OrderKind::Purge,
        Kind::Veto => OrderKind::Veto,
        Kind::Export => OrderKind::Export,
    };
    let export = match (kind, args.medium) {
        (OrderKind::Export, Some(medium)) => Some(ExportSpec { medium, recipients: args.recipients, newest: args.newest, since: args.since }),
        (OrderKind::Export, None) => return Err(CliError::Usage("an export order needs --medium (the id `vaultctl media init` printed) and at least one --recipient".into())),
        (_, medium) => {
            if medium.is_some() || !args.recipients.is_empty() || args.newest.is_some() || args.since.is_some() {
                return Err(CliError::Usage(format!("--medium, --recipient, --newest and --since belong to export orders; this is a {}", kind.name())));
            }
            None
        }
    };
    let doc = OrderDoc {
        vault_id: root.vault_id.clone(),
        kind,
        serial: args.serial,
        issued: issued.to_string(),
        expires: issued.saturating_add(valid_for).to_string(),
        signed_for_root: root.digest(),
        snapshots: args.snapshots,
        datasets,
        vetoes: args.vetoes,
        export,
        reason: args.reason,
    };
    // Checked as the vault will check it, before anyone signs.
    Order::from_doc(doc.clone())?;
    vault_io::write_atomic(&args.out, &orders::unsigned(&doc).to_bytes(), 0o644)?;
    eprintln!("{} order {} for vault {} written, unsigned: {}", kind.name(), doc.serial, doc.vault_id, args.out.display());
    crate::output::emit(json, serde_json::json!({ "out": args.out, "order": doc }), || {});
    Ok(())
}

fn read_order(path: &Path) -> Result<(Envelope, Order, String)> {
    let bytes = vault_io::read_bounded(path, MAX_BUNDLE_BYTES)?;
    let envelope = Envelope::from_bytes_of(&bytes, ORDER_PAYLOAD_TYPE)?;
    let payload = envelope.payload_bytes()?;
    let order = Order::from_bytes(&payload)?;
    let id = vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, &payload).as_ref());
    Ok((envelope, order, id))
}

fn sign(key_path: &Path, root_path: &Path, order: &Path, out: &Path, json: bool) -> Result<()> {
    out_file(out, "NAME.order")?;
    let key = keyfile::load_secret(key_path)?;
    let root = load_root(root_path)?;
    let (mut envelope, parsed, _) = read_order(order)?;
    if root.admin_with_key(&key.public_key()).is_none() {
        return Err(not_an_admin(key_path, &key.public_key(), &root, root_path));
    }
    envelope.sign_in(&key, ORDER_SIGNING_CONTEXT)?;
    vault_io::write_atomic(out, &envelope.to_bytes(), 0o644)?;
    let needs = parsed.kind().threshold(&root);
    let signer = signer_name(&[&root], &key.public_key());
    eprintln!("signed {} order {} as {signer}; {} of the {needs} signature(s) it needs: {}", parsed.kind().name(), parsed.doc.serial, envelope.signatures.len(), out.display());
    crate::output::emit(
        json,
        serde_json::json!({ "out": out, "kind": parsed.kind().name(), "serial": parsed.doc.serial, "signer": signer, "signatures": envelope.signatures.len(), "needs": needs }),
        || {},
    );
    Ok(())
}

/// An order checked as the vault would, without the vault's order state: serial floors start
/// at 0, and the purge a veto names is taken to be waiting (the vault checks both).
pub fn verify_offline(bytes: &[u8], root: &TrustRoot, at: JudgedAt) -> vault_core::error::Result<()> {
    let payload = Envelope::from_bytes_of(bytes, ORDER_PAYLOAD_TYPE)?.payload_bytes()?;
    let mut state = OrderState::default();
    if let Some(vetoed) = Order::from_bytes(&payload).ok().and_then(|order| order.doc.vetoes) {
        let blank = String::new;
        state.pending_purges.push(PendingPurge {
            id: vetoed,
            snapshots: vec![],
            datasets: vec![],
            reason: blank(),
            signers: vec![],
            accepted_at: blank(),
            executes_at: blank(),
            expires: blank(),
            min_retain: None,
        });
    }
    orders::verify(bytes, root, &state, at, Timestamp::EPOCH, &orders::AnySnapshot).map(|_| ())
}

fn show(order: &Path, json: bool) -> Result<()> {
    let (envelope, parsed, id) = read_order(order)?;
    if json {
        let value = serde_json::json!({ "id": id, "verified": false, "order": parsed.doc, "signature_key_ids": envelope.key_ids().collect::<Vec<_>>() });
        crate::output::emit(true, value, || {});
        return Ok(());
    }
    let doc = &parsed.doc;
    println!("{} order {} for vault {} (id {id})", doc.kind.name(), doc.serial, doc.vault_id);
    println!("issued {}, expires {}; reason: {}", doc.issued, doc.expires, doc.reason);
    for snapshot in &doc.snapshots {
        println!("snapshot {snapshot}");
    }
    for d in &doc.datasets {
        println!("dataset {}/{}", d.pusher, d.dataset);
    }
    if let Some(vetoed) = &doc.vetoes {
        println!("vetoes purge order {vetoed}");
    }
    if let Some(export) = &doc.export {
        println!("onto medium {}", export.medium);
        for recipient in &export.recipients {
            println!("encrypted to {recipient}");
        }
        if let Some(newest) = export.newest {
            println!("newest {newest} of each dataset");
        }
        if let Some(since) = &export.since {
            println!("received since {since}");
        }
    }
    println!("signed by key(s): {}", envelope.key_ids().collect::<Vec<_>>().join(", "));
    Ok(())
}
