//! `vaultctl report`: one self-contained HTML page from a store's audit log (verified whole
//! first): a timeline of the link and what happened on it, pushes per dataset, refusals and
//! alarms, scrubs and drills, capacity over time. Inline SVG and CSS only: no script, nothing
//! fetched from anywhere, so it can be opened on an air-gapped desk and kept as evidence.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use vault_core::units::Timestamp;

use crate::error::{CliError, Result};

/// Rows of a table at most (the newest); the page says how many were left out.
const MAX_ROWS: usize = 500;
/// Entries read from the log at most (the newest): a report of ten years stays a page.
const MAX_ENTRIES: u64 = 1 << 20;
const WIDTH: f64 = 960.0;

/// Writes the report of the log under `store` to `out`.
pub fn write(store: &Path, vault_key: &str, out: &Path, json: bool) -> Result<()> {
    let key = crate::keyfile::public_key_arg(vault_key)?;
    vault_store::check_store_dir(store)?;
    let verified =
        vault_store::audit::verify(store, &key).map_err(|e| CliError::Untrusted(format!("{e}; the log under {} is not what the vault signed, so no report is made from it", store.display())))?;
    let first = verified.entries.saturating_sub(MAX_ENTRIES);
    let mut events = Vec::new();
    let mut from = first;
    while from < verified.entries {
        let to = (from + 4096).min(verified.entries);
        for entry in vault_store::audit::read_entries(store, from, to)? {
            if let Ok(value) = serde_json::from_slice::<Value>(&entry) {
                events.push(value);
            }
        }
        from = to;
    }
    let page = render(&events, &Header { vault_key: key.to_string(), entries: verified.entries, first, root: verified.checkpoint.root_base64(), origin: verified.checkpoint.origin.clone() });
    vault_io::write_atomic(out, page.as_bytes(), 0o644)?;
    crate::output::emit(json, serde_json::json!({ "out": out, "entries": verified.entries - first, "bytes": page.len() }), || {
        println!("wrote {} ({} entries of the audit log, {} bytes)", out.display(), verified.entries - first, page.len())
    });
    Ok(())
}

struct Header {
    vault_key: String,
    origin: String,
    entries: u64,
    first: u64,
    root: String,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time_of(event: &Value) -> Option<i64> {
    event["time"].as_str().and_then(|t| Timestamp::parse(t).ok()).map(Timestamp::unix)
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| if value.is_null() { String::new() } else { value.to_string() }, str::to_string)
}

fn kind<'a>(events: &'a [Value], name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["event"] == name)
}

/// The page for `events` (oldest first).
fn render(events: &[Value], header: &Header) -> String {
    let mut page = String::new();
    let title = format!("Vault report: {}", header.origin);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font:14px/1.4 sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 24px}}\
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}th{{background:#eee}}\
.bad{{color:#b00;font-weight:bold}}.ok{{color:#070}}code{{font-size:12px}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let times: Vec<i64> = events.iter().filter_map(time_of).collect();
    let (start, end) = (times.iter().min().copied().unwrap_or(0), times.iter().max().copied().unwrap_or(0));
    let _ = writeln!(
        page,
        "<p>Vault key <code>{}</code>. Audit log of {} entries, verified against that key up to its signed checkpoint (root <code>{}</code>){}. From {} to {} (vault time).</p>",
        escape(&header.vault_key),
        header.entries,
        escape(&header.root),
        if header.first > 0 { format!("; this report shows the newest {}", header.entries - header.first) } else { String::new() },
        when(start),
        when(end)
    );
    let alarms: Vec<&Value> = kind(events, "alarm").collect();
    let refusals: Vec<&Value> = events.iter().filter(|e| e["event"] == "session_refused" || e["event"] == "policy_refused" || e["event"] == "order_refused").collect();
    let sealed: Vec<&Value> = kind(events, "snapshot_sealed").collect();
    let _ = write!(
        page,
        "<h2>Summary</h2>\n<table><tr><th>snapshots sealed</th><td id=\"sealed\">{}</td></tr><tr><th>refusals</th><td id=\"refusals\">{}</td></tr><tr><th>alarms</th><td id=\"alarms\" class=\"{}\">{}</td></tr><tr><th>windows (link up)</th><td>{}</td></tr></table>\n",
        sealed.len(),
        refusals.len(),
        if alarms.is_empty() { "ok" } else { "bad" },
        alarms.len(),
        kind(events, "link_up").count()
    );
    timeline(&mut page, events, start, end);
    pushes(&mut page, &sealed);
    listing(&mut page, "Refusals", &refusals, |e| format!("{}: {}", text(&e["event"]), text(if e["reason"].is_null() { &e["detail"] } else { &e["reason"] })));
    listing(&mut page, "Alarms", &alarms, |e| format!("{}: {}", text(&e["rule"]), text(&e["detail"])));
    let checks: Vec<&Value> = events.iter().filter(|e| e["event"] == "scrub_finished" || e["event"] == "drill_finished").collect();
    listing(&mut page, "Scrubs and restore drills", &checks, |e| {
        if e["event"] == "scrub_finished" {
            let found = e["found"].as_array().map_or(0, Vec::len);
            format!("scrub: {} chunks in {} packs read back, {found} bad copies, {} chunks without a good copy", text(&e["chunks"]), text(&e["packs"]), text(&e["unrecoverable_chunks"]))
        } else {
            format!(
                "restore drill: {} snapshots, {} files, {} bytes rebuilt at {} bytes/s, {} errors",
                e["snapshots"].as_array().map_or(0, Vec::len),
                text(&e["files"]),
                text(&e["bytes"]),
                text(&e["bytes_per_sec"]),
                text(&e["errors"])
            )
        }
    });
    capacity(&mut page, events, start, end);
    page.push_str("<p>Made by <code>vaultctl report</code> from the store's audit log alone; every line above is an entry the vault signed.</p>\n</body></html>\n");
    page
}

/// The link's windows as bars, with commits, refusals and alarms as marks below them.
fn timeline(page: &mut String, events: &[Value], start: i64, end: i64) {
    let span = (end - start).max(1) as f64;
    let x = |t: i64| 40.0 + (t - start) as f64 / span * (WIDTH - 60.0);
    let _ =
        write!(page, "<h2>Timeline</h2>\n<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"150\" role=\"img\" aria-label=\"link windows and events over time\">\n");
    for (row, label) in [(20, "link"), (60, "commits"), (90, "refusals"), (120, "alarms")] {
        let _ = writeln!(page, "<text x=\"0\" y=\"{}\" font-size=\"11\">{label}</text>", row + 4);
    }
    let mut up: Option<i64> = None;
    for event in events {
        let Some(t) = time_of(event) else { continue };
        match event["event"].as_str().unwrap_or("") {
            "link_up" => up = Some(t),
            "link_down" => {
                if let Some(from) = up.take() {
                    let _ = writeln!(
                        page,
                        "<rect class=\"window\" x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"20\" fill=\"#4a8\"><title>link up {} .. {}</title></rect>",
                        x(from),
                        (x(t) - x(from)).max(2.0),
                        when(from),
                        when(t)
                    );
                }
            }
            kind => {
                let (row, colour) = match kind {
                    "committed" => (60, "#070"),
                    "session_refused" | "policy_refused" | "order_refused" => (90, "#c80"),
                    "alarm" => (120, "#b00"),
                    _ => continue,
                };
                let _ = writeln!(page, "<circle cx=\"{:.1}\" cy=\"{row}\" r=\"4\" fill=\"{colour}\"><title>{} {}</title></circle>", x(t), escape(kind), when(t));
            }
        }
    }
    let _ = writeln!(page, "<text x=\"40\" y=\"146\" font-size=\"11\">{}</text><text x=\"{}\" y=\"146\" font-size=\"11\" text-anchor=\"end\">{}</text>", when(start), WIDTH - 20.0, when(end));
    if let Some(from) = up {
        let _ = writeln!(
            page,
            "<rect class=\"window\" x=\"{:.1}\" y=\"10\" width=\"{:.1}\" height=\"20\" fill=\"#8c8\"><title>link up since {}</title></rect>",
            x(from),
            (x(end) - x(from)).max(2.0),
            when(from)
        );
    }
    page.push_str("</svg>\n");
}

fn when(t: i64) -> String {
    Timestamp::from_unix(t).map(|t| t.to_string()).unwrap_or_default()
}

/// Per (pusher, dataset): how many snapshots, their bytes, the bytes that were new, the last.
fn pushes(page: &mut String, sealed: &[&Value]) {
    let mut by_dataset: BTreeMap<(String, String), (u64, u64, u64, String)> = BTreeMap::new();
    for s in sealed {
        let row = by_dataset.entry((text(&s["pusher"]), text(&s["dataset"]))).or_default();
        row.0 += 1;
        row.1 += s["logical_bytes"].as_u64().unwrap_or(0);
        row.2 += s["bytes_new"].as_u64().unwrap_or(0);
        row.3 = text(&s["time"]);
    }
    page.push_str("<h2>Pushes per dataset</h2>\n<table id=\"pushes\"><tr><th>pusher</th><th>dataset</th><th>snapshots</th><th>bytes</th><th>new bytes</th><th>last</th></tr>\n");
    for ((pusher, dataset), (count, bytes, new, last)) in &by_dataset {
        let _ = writeln!(page, "<tr><td>{}</td><td>{}</td><td>{count}</td><td>{bytes}</td><td>{new}</td><td>{}</td></tr>", escape(pusher), escape(dataset), escape(last));
    }
    page.push_str("</table>\n");
}

/// A table of `rows` (the newest [`MAX_ROWS`]), each its time and `describe`'s line.
fn listing(page: &mut String, title: &str, rows: &[&Value], describe: impl Fn(&Value) -> String) {
    let _ = writeln!(page, "<h2>{}</h2>", escape(title));
    if rows.is_empty() {
        page.push_str("<p class=\"ok\">None.</p>\n");
        return;
    }
    let skipped = rows.len().saturating_sub(MAX_ROWS);
    if skipped > 0 {
        let _ = writeln!(page, "<p>The newest {MAX_ROWS} of {} (see <code>vaultctl audit show</code> for all).</p>", rows.len());
    }
    page.push_str("<table><tr><th>time</th><th>what</th></tr>\n");
    for row in &rows[skipped..] {
        let _ = writeln!(page, "<tr><td>{}</td><td>{}</td></tr>", escape(&text(&row["time"])), escape(&describe(row)));
    }
    page.push_str("</table>\n");
}

/// Used space over time, from the daily `capacity` lines.
fn capacity(page: &mut String, events: &[Value], start: i64, end: i64) {
    let points: Vec<(i64, f64)> = kind(events, "capacity").filter_map(|e| Some((time_of(e)?, e["used_percent"].as_f64()?))).collect();
    page.push_str("<h2>Capacity</h2>\n");
    let Some((_, last)) = points.last() else {
        page.push_str("<p>No capacity reading in the log yet.</p>\n");
        return;
    };
    let span = (end - start).max(1) as f64;
    let x = |t: i64| 40.0 + (t - start) as f64 / span * (WIDTH - 60.0);
    let y = |percent: f64| 110.0 - percent.clamp(0.0, 100.0);
    let line: Vec<String> = points.iter().map(|(t, p)| format!("{:.1},{:.1}", x(*t), y(*p))).collect();
    let _ = write!(
        page,
        "<p>{last:.0} % used at the last reading.</p>\n<svg id=\"capacity\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"120\" role=\"img\" aria-label=\"store space used over time\">\
<text x=\"0\" y=\"14\" font-size=\"11\">100 %</text><text x=\"0\" y=\"114\" font-size=\"11\">0 %</text>\
<line x1=\"40\" y1=\"10\" x2=\"{WIDTH}\" y2=\"10\" stroke=\"#ddd\"/><line x1=\"40\" y1=\"110\" x2=\"{WIDTH}\" y2=\"110\" stroke=\"#ddd\"/>\
<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"2\" points=\"{}\"/>{}</svg>\n",
        line.join(" "),
        points.iter().map(|(t, p)| format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#36c\"><title>{p:.0} % at {}</title></circle>", x(*t), y(*p), when(*t))).collect::<String>()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_shows_what_the_log_holds_escapes_everything_and_runs_no_script() {
        let events: Vec<Value> = [
            r#"{"event":"link_up","time":"2026-12-01T02:00:00Z","why":"window"}"#,
            r#"{"event":"snapshot_sealed","time":"2026-12-01T02:10:00Z","pusher":"db-backup","dataset":"pgdump","logical_bytes":1000,"bytes_new":400,"snapshot":"s1"}"#,
            r#"{"event":"committed","time":"2026-12-01T02:10:01Z","pusher":"db-backup","dataset":"pgdump"}"#,
            r#"{"event":"session_refused","time":"2026-12-01T02:20:00Z","peer":"192.0.2.9:1","reason":"<script>alert(1)</script> not a listed key"}"#,
            r#"{"event":"link_down","time":"2026-12-01T03:00:00Z","why":"gate"}"#,
            r#"{"event":"alarm","time":"2026-12-01T03:01:00Z","rule":"drill_failed","detail":"snapshot s1: chunk 00ff"}"#,
            r#"{"event":"capacity","time":"2026-12-01T03:02:00Z","used_percent":42}"#,
            r#"{"event":"drill_finished","time":"2026-12-01T03:03:00Z","snapshots":["s1"],"files":3,"bytes":1000,"bytes_per_sec":5000,"errors":1}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let page = render(&events, &Header { vault_key: "ed25519:AAAA".into(), origin: "airgap-vault/00".into(), entries: 8, first: 0, root: "root=".into() });
        assert!(!page.contains("<script"), "no script, even from a hostile reason: {page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<td>pgdump</td><td>1</td><td>1000</td><td>400</td>"), "{page}");
        assert!(page.contains("<rect class=\"window\""), "the window is drawn");
        assert!(page.contains("drill_failed: snapshot s1: chunk 00ff"));
        assert!(page.contains("restore drill: 1 snapshots, 3 files, 1000 bytes rebuilt at 5000 bytes/s, 1 errors"));
        assert!(page.contains("42 % used at the last reading"));
        assert!(page.contains("id=\"alarms\" class=\"bad\">1<"));
        assert!(!page.contains("src=") && !page.contains("href=") && !page.contains("url("), "nothing is fetched from anywhere");
    }
}
