//! Generated file contents: text that compresses like text (prose, code, CSV, SQL, logs,
//! RTF, SVG), and the containers real datasets hold their incompressible bytes in (zip-based
//! office files, JPEG and PNG, PDF, gzip, tar.gz, zip), each built the way the real format
//! is (real deflate, real CRCs), so the probe sees what it would see on a file server.

use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

pub type Rand = ChaCha8Rng;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "report",
    "quarter",
    "revenue",
    "customer",
    "project",
    "meeting",
    "budget",
    "team",
    "review",
    "contract",
    "delivery",
    "schedule",
    "invoice",
    "account",
    "policy",
    "approval",
    "update",
    "draft",
    "final",
    "summary",
    "analysis",
    "market",
    "growth",
    "cost",
    "service",
    "support",
    "system",
    "network",
    "server",
    "client",
    "agreement",
    "payment",
    "terms",
    "period",
    "total",
    "amount",
    "balance",
    "statement",
    "forecast",
    "target",
    "sales",
    "region",
    "office",
    "staff",
    "training",
    "safety",
    "quality",
    "process",
    "plan",
    "risk",
    "issue",
    "action",
    "owner",
    "status",
    "priority",
    "release",
    "version",
    "change",
    "request",
    "document",
    "section",
    "page",
    "table",
    "figure",
    "note",
    "please",
    "regards",
    "thanks",
    "attached",
    "following",
    "current",
    "previous",
    "next",
    "week",
    "month",
    "year",
    "date",
    "time",
    "number",
    "price",
    "order",
    "product",
    "supplier",
    "vendor",
    "shipment",
    "warehouse",
    "stock",
    "inventory",
    "employee",
    "manager",
    "director",
    "board",
    "minutes",
    "agenda",
    "decision",
    "proposal",
    "estimate",
    "hours",
    "rate",
    "travel",
    "expense",
    "claim",
    "receipt",
    "tax",
    "audit",
    "compliance",
    "legal",
    "notice",
    "confidential",
    "internal",
    "external",
    "partner",
    "vendor",
    "risk",
    "control",
    "access",
    "data",
    "backup",
    "storage",
    "capacity",
    "performance",
    "incident",
    "resolved",
    "pending",
    "approved",
    "rejected",
    "submitted",
    "received",
    "sent",
    "reviewed",
    "signed",
    "completed",
    "started",
    "planned",
    "agreed",
    "discussed",
    "noted",
    "required",
    "expected",
    "increase",
    "decrease",
    "improve",
    "reduce",
    "maintain",
    "provide",
    "include",
    "consider",
    "ensure",
    "confirm",
    "prepare",
    "present",
    "organize",
    "coordinate",
    "manage",
    "develop",
    "support",
    "analyse",
    "measure",
    "monitor",
];

const NAMES: &[&str] = &[
    "Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Nowak", "Kim", "Tanaka", "Silva", "Olsen", "Novak", "Brown", "Taylor", "Wilson", "Martin", "Lee", "Walker", "Hall", "Young", "King",
    "Wright", "Lopez", "Hill", "Green", "Adams", "Baker", "Nelson", "Carter", "Mitchell", "Perez", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans", "Edwards", "Collins", "Stewart",
];
const FIRST: &[&str] =
    &["Anna", "Ben", "Clara", "David", "Eva", "Frank", "Greta", "Hugo", "Ines", "Jonas", "Karin", "Lars", "Mia", "Nils", "Olga", "Paul", "Rita", "Sven", "Tara", "Uwe", "Vera", "Walt", "Yara", "Zoe"];
const CITIES: &[&str] = &["Berlin", "Lyon", "Porto", "Gdansk", "Turin", "Leeds", "Malmo", "Graz", "Ghent", "Brno", "Cork", "Basel", "Aarhus", "Bilbao", "Utrecht"];

/// A word, Zipf-like: the first words of the list far more often than the last.
pub fn word(rng: &mut Rand) -> &'static str {
    let u: f64 = rng.gen();
    WORDS[whole((u * u * u) * WORDS.len() as f64) % WORDS.len()]
}

pub fn name(rng: &mut Rand) -> String {
    format!("{} {}", FIRST[rng.gen_range(0..FIRST.len())], NAMES[rng.gen_range(0..NAMES.len())])
}

pub fn sentence(rng: &mut Rand, out: &mut String) {
    let n = rng.gen_range(5..20);
    for i in 0..n {
        let w = word(rng);
        if i == 0 {
            let mut c = w.chars();
            let first = c.next().expect("words are not empty").to_ascii_uppercase();
            out.push(first);
            out.push_str(c.as_str());
        } else {
            out.push(' ');
            match rng.gen_range(0..40) {
                0 => out.push_str(&rng.gen_range(1..10_000).to_string()),
                1 => out.push_str(NAMES[rng.gen_range(0..NAMES.len())]),
                2 => out.push_str(CITIES[rng.gen_range(0..CITIES.len())]),
                _ => out.push_str(w),
            }
        }
        if i + 1 < n && rng.gen_range(0..12) == 0 {
            out.push(',');
        }
    }
    out.push_str(if rng.gen_range(0..10) == 0 { "?" } else { "." });
}

/// Paragraphs of prose, about `bytes` long.
pub fn prose(rng: &mut Rand, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        for _ in 0..rng.gen_range(2..7) {
            sentence(rng, &mut out);
            out.push(' ');
        }
        out.pop();
        out.push_str("\n\n");
    }
    out
}

/// One line of prose (for edits).
pub fn prose_line(rng: &mut Rand) -> String {
    let mut out = String::new();
    sentence(rng, &mut out);
    out.push('\n');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
    Header,
    Python,
}

const IDENTS: &[&str] = &[
    "buf", "len", "count", "index", "node", "entry", "state", "config", "result", "value", "offset", "size", "ctx", "item", "list", "map", "key", "data", "path", "name", "flags", "mode", "handle",
    "reader", "writer", "parser", "token", "error", "limit", "total",
];
const TYPES_RS: &[&str] = &["u32", "u64", "usize", "String", "Vec<u8>", "&str", "bool", "Option<u64>", "Result<()>", "&[u8]"];
const TYPES_C: &[&str] = &["int", "size_t", "uint32_t", "char *", "const char *", "struct node *", "unsigned", "long", "bool"];

fn ident(rng: &mut Rand) -> String {
    let a = IDENTS[rng.gen_range(0..IDENTS.len())];
    if rng.gen_bool(0.5) {
        format!("{a}_{}", IDENTS[rng.gen_range(0..IDENTS.len())])
    } else {
        a.to_string()
    }
}

/// One statement of code (for edits and bodies).
pub fn code_line(rng: &mut Rand, lang: Lang, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let (a, b, c) = (ident(rng), ident(rng), ident(rng));
    let n = rng.gen_range(0..4096);
    match (lang, rng.gen_range(0..6)) {
        (Lang::Rust, 0) => format!("{pad}let {a} = {b}.{c}({n});\n"),
        (Lang::Rust, 1) => format!("{pad}if {a} > {b} {{ return Err(Error::{}); }}\n", capitalize(&c)),
        (Lang::Rust, 2) => format!("{pad}// {}\n", prose_line(rng).trim_end()),
        (Lang::Rust, 3) => format!("{pad}{a}.push({b}[{n} % {c}.len()]);\n"),
        (Lang::Rust, 4) => format!("{pad}let mut {a}: {} = Default::default();\n", TYPES_RS[rng.gen_range(0..TYPES_RS.len())]),
        (Lang::Rust, _) => format!("{pad}{a} += {b}.saturating_sub({c});\n"),
        (Lang::Python, 0) => format!("{pad}{a} = {b}.{c}({n})\n"),
        (Lang::Python, 1) => format!("{pad}if {a} > {b}:\n{pad}    raise ValueError(\"{c}\")\n"),
        (Lang::Python, 2) => format!("{pad}# {}\n", prose_line(rng).trim_end()),
        (Lang::Python, 3) => format!("{pad}{a}.append({b}[{n} % len({c})])\n"),
        (Lang::Python, 4) => format!("{pad}for {a} in {b}:\n{pad}    {c} += {a}\n"),
        (Lang::Python, _) => format!("{pad}return {{\"{a}\": {b}, \"{c}\": {n}}}\n"),
        (_, 0) => format!("{pad}{a} = {b}->{c} + {n};\n"),
        (_, 1) => format!("{pad}if ({a} > {b})\n{pad}\treturn -E{};\n", c.to_ascii_uppercase()),
        (_, 2) => format!("{pad}/* {} */\n", prose_line(rng).trim_end()),
        (_, 3) => format!("{pad}memcpy({a}, {b}, sizeof(*{c}));\n"),
        (_, 4) => format!("{pad}{} {a} = {n};\n", TYPES_C[rng.gen_range(0..TYPES_C.len())]),
        (_, _) => format!("{pad}{a}[{b}++] = {c};\n"),
    }
}

fn capitalize(s: &str) -> String {
    s.split('_').map(|p| p[..1].to_ascii_uppercase() + &p[1..]).collect()
}

/// A source file of functions, about `bytes` long.
pub fn code(rng: &mut Rand, lang: Lang, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 256);
    match lang {
        Lang::Rust => out.push_str("use std::collections::HashMap;\nuse crate::error::{Error, Result};\n\n"),
        Lang::Python => out.push_str("import os\nimport sys\nfrom typing import Dict, List\n\n"),
        Lang::C => out.push_str("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include \"common.h\"\n\n"),
        Lang::Header => out.push_str("#ifndef COMMON_H\n#define COMMON_H\n\n#include <stdint.h>\n\n"),
    }
    while out.len() < bytes {
        let f = ident(rng);
        let body = rng.gen_range(3..25);
        match lang {
            Lang::Header => {
                for _ in 0..body {
                    let t = TYPES_C[rng.gen_range(0..TYPES_C.len())];
                    out.push_str(&format!("{t} {}_{}(struct {} *{}, size_t {});\n", f, ident(rng), ident(rng), ident(rng), ident(rng)));
                }
                out.push_str(&format!("#define {}_MAX {}\n\n", f.to_ascii_uppercase(), rng.gen_range(1..65536)));
                continue;
            }
            Lang::Rust => out.push_str(&format!("/// {}\npub fn {f}({}: &mut {}, {}: usize) -> Result<u64> {{\n", prose_line(rng).trim_end(), ident(rng), capitalize(&ident(rng)), ident(rng))),
            Lang::Python => out.push_str(&format!("def {f}({}, {}=None):\n    \"\"\"{}\"\"\"\n", ident(rng), ident(rng), prose_line(rng).trim_end())),
            Lang::C => out.push_str(&format!("static int {f}(struct {} *{}, size_t {})\n{{\n", ident(rng), ident(rng), ident(rng))),
        }
        for _ in 0..body {
            out.push_str(&code_line(rng, lang, 4));
        }
        match lang {
            Lang::Rust => out.push_str("    Ok(0)\n}\n\n"),
            Lang::Python => out.push_str("    return None\n\n\n"),
            _ => out.push_str("    return 0;\n}\n\n"),
        }
    }
    if lang == Lang::Header {
        out.push_str("#endif\n");
    }
    out
}

pub fn date(day: u32) -> String {
    let (m, d) = (1 + (day / 28) % 12, 1 + day % 28);
    format!("2024-{m:02}-{d:02}")
}

/// One CSV row.
pub fn csv_row(rng: &mut Rand, id: u64) -> String {
    format!(
        "{id},{},{},{},{}.{:02},{},{}\n",
        name(rng),
        date(rng.gen_range(0..336)),
        CITIES[rng.gen_range(0..CITIES.len())],
        rng.gen_range(0..100_000),
        rng.gen_range(0..100),
        ["open", "paid", "overdue", "cancelled"][rng.gen_range(0..4)],
        word(rng)
    )
}

pub fn csv(rng: &mut Rand, bytes: usize) -> String {
    let mut out = String::from("id,name,date,city,amount,status,note\n");
    let mut id = rng.gen_range(1000..100_000);
    while out.len() < bytes {
        out.push_str(&csv_row(rng, id));
        id += 1;
    }
    out
}

/// One row of a `mysqldump --extended-insert=FALSE` dump.
pub fn sql_row(rng: &mut Rand, table: &str, id: u64) -> String {
    format!(
        "INSERT INTO `{table}` VALUES ({id},'{}','{}@example.com','{} {:02}:{:02}:{:02}',{}.{:02},'{}','{}');\n",
        name(rng),
        word(rng),
        date(rng.gen_range(0..336)),
        rng.gen_range(0..24),
        rng.gen_range(0..60),
        rng.gen_range(0..60),
        rng.gen_range(0..10_000),
        rng.gen_range(0..100),
        ["active", "closed", "pending"][rng.gen_range(0..3)],
        prose_line(rng).trim_end().replace('\'', "")
    )
}

pub fn sql_dump(rng: &mut Rand, tables: &[&str], bytes: usize) -> String {
    let mut out = String::from("-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n-- Host: localhost    Database: app\n-- ------------------------------------------------------\n\n/*!40101 SET NAMES utf8mb4 */;\n\n");
    let per_table = bytes / tables.len().max(1);
    for t in tables {
        out.push_str(&format!("DROP TABLE IF EXISTS `{t}`;\nCREATE TABLE `{t}` (\n  `id` bigint NOT NULL AUTO_INCREMENT,\n  `name` varchar(255) NOT NULL,\n  `email` varchar(255) DEFAULT NULL,\n  `created` datetime NOT NULL,\n  `amount` decimal(12,2) DEFAULT NULL,\n  `state` varchar(16) NOT NULL,\n  `note` text,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\nLOCK TABLES `{t}` WRITE;\n"));
        let start = out.len();
        let mut id = 1;
        while out.len() - start < per_table {
            out.push_str(&sql_row(rng, t, id));
            id += 1;
        }
        out.push_str("UNLOCK TABLES;\n\n");
    }
    out.push_str("-- Dump completed\n");
    out
}

pub fn log_line(rng: &mut Rand, service: &str, day: u32) -> String {
    let (h, m, s, ms) = (rng.gen_range(0..24), rng.gen_range(0..60), rng.gen_range(0..60), rng.gen_range(0..1000));
    let level = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"][rng.gen_range(0..6)];
    match rng.gen_range(0..3) {
        0 => format!(
            "10.{}.{}.{} - - [{}T{h:02}:{m:02}:{s:02}Z] \"GET /api/v1/{}/{} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0\"\n",
            rng.gen_range(0..8),
            rng.gen_range(0..255),
            rng.gen_range(1..255),
            date(day),
            word(rng),
            rng.gen_range(1..100_000),
            [200, 200, 200, 304, 404, 500][rng.gen_range(0..6)],
            rng.gen_range(100..90_000)
        ),
        1 => format!(
            "{}T{h:02}:{m:02}:{s:02}.{ms:03}Z {level} [{service}-worker-{}] request_id={:016x} {} {} took {}ms\n",
            date(day),
            rng.gen_range(0..16),
            rng.gen::<u64>() >> 16,
            word(rng),
            word(rng),
            rng.gen_range(1..3000)
        ),
        _ => format!("{}T{h:02}:{m:02}:{s:02}Z host {service}[{}]: {}\n", date(day), rng.gen_range(100..30_000), prose_line(rng).trim_end()),
    }
}

pub fn log_text(rng: &mut Rand, service: &str, day: u32, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        out.push_str(&log_line(rng, service, day));
    }
    out
}

pub fn rtf(rng: &mut Rand, bytes: usize) -> String {
    let mut out = String::from(
        "{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Helvetica;}{\\f1\\froman Times;}}\n{\\colortbl;\\red0\\green0\\blue0;}\n\\paperw11900\\paperh16840\\margl1440\\margr1440\n",
    );
    while out.len() < bytes {
        out.push_str("\\pard\\sa200\\sl276\\slmult1\\f0\\fs22 ");
        sentence(rng, &mut out);
        out.push(' ');
        sentence(rng, &mut out);
        out.push_str("\\par\n");
    }
    out.push('}');
    out
}

pub fn svg(rng: &mut Rand) -> String {
    let mut out = String::from("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 24 24\" width=\"24\" height=\"24\">\n");
    for _ in 0..rng.gen_range(1..8) {
        out.push_str("  <path d=\"");
        for _ in 0..rng.gen_range(4..30) {
            out.push_str(&format!("{}{}.{} {}.{} ", ["M", "L", "C", "Z", "H", "V"][rng.gen_range(0..6)], rng.gen_range(0..24), rng.gen_range(0..10), rng.gen_range(0..24), rng.gen_range(0..10)));
        }
        out.push_str("\" fill=\"currentColor\"/>\n");
    }
    out.push_str("</svg>\n");
    out
}

pub fn html(rng: &mut Rand, bytes: usize) -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Products</title>\n<link rel=\"stylesheet\" href=\"/css/site.css\">\n</head>\n<body>\n");
    while out.len() < bytes {
        out.push_str("<div class=\"card\">\n  <h2>");
        out.push_str(word(rng));
        out.push_str("</h2>\n  <p>");
        sentence(rng, &mut out);
        out.push_str("</p>\n</div>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Keystream-like bytes: what compressed or encrypted payloads look like to any probe.
pub fn random_bytes(rng: &mut Rand, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

// ---- containers ----------------------------------------------------------------------

pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = u32::try_from(i).expect("below 256");
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, b| table[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8))
}

pub fn deflate(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, 6)
}

/// gzip (RFC 1952) of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(&deflate(data));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE: the length modulo 2^32 (RFC 1952), its low four bytes.
    out.extend_from_slice(&(data.len() as u64).to_le_bytes()[..4]);
    out
}

/// A zip archive; each member deflated unless it is already compressed (then stored), as
/// office suites and zip tools do.
pub fn zip(members: &[(String, Vec<u8>, bool)]) -> Vec<u8> {
    // Plain zip (no zip64): what is generated here stays far below its 16- and 32-bit fields.
    let u16_of = |n: usize| u16::try_from(n).expect("below 64 Ki names or members");
    let u32_of = |n: usize| u32::try_from(n).expect("below 4 GiB");
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, compress) in members {
        let (method, body) = if *compress { (8u16, deflate(data)) } else { (0u16, data.clone()) };
        let crc = crc32(data);
        let offset = u32_of(out.len());
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes());
            }
            for v in [20u16, 0, method, 0x6000, 0x5821] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            for v in [crc, u32_of(body.len()), u32_of(data.len())] {
                h.extend_from_slice(&v.to_le_bytes());
            }
            h.extend_from_slice(&u16_of(name.len()).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            if central {
                for v in [0u16, 0, 0] {
                    h.extend_from_slice(&v.to_le_bytes());
                }
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&header(0x0403_4b50, false));
        out.extend_from_slice(&body);
        central.extend_from_slice(&header(0x0201_4b50, true));
    }
    let cd_offset = u32_of(out.len());
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, u16_of(members.len()), u16_of(members.len())] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&u32_of(central.len()).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A ustar archive.
pub fn tar(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        let mut h = [0u8; 512];
        let name = name.as_bytes();
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0001750");
        h[116..123].copy_from_slice(b"0001750");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"14577042140");
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

const DOCX_TYPES: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"><Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/><Default Extension=\"xml\" ContentType=\"application/xml\"/><Default Extension=\"jpeg\" ContentType=\"image/jpeg\"/><Override PartName=\"/word/document.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>";
const RELS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\"><Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument\" Target=\"word/document.xml\"/></Relationships>";

/// A .docx: the text as WordprocessingML, deflated, with its styles and (for some) a
/// picture stored as it came.
pub fn docx(text: &str, picture: Option<&[u8]>) -> Vec<u8> {
    let mut xml = String::with_capacity(text.len() * 2);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>");
    for para in text.split("\n\n").filter(|p| !p.is_empty()) {
        xml.push_str("<w:p><w:pPr><w:pStyle w:val=\"Normal\"/><w:spacing w:after=\"160\"/></w:pPr><w:r><w:rPr><w:rFonts w:ascii=\"Calibri\" w:hAnsi=\"Calibri\"/><w:sz w:val=\"22\"/></w:rPr><w:t xml:space=\"preserve\">");
        xml.push_str(para);
        xml.push_str("</w:t></w:r></w:p>");
    }
    xml.push_str("<w:sectPr><w:pgSz w:w=\"11906\" w:h=\"16838\"/></w:sectPr></w:body></w:document>");
    let mut members = vec![
        ("[Content_Types].xml".to_string(), DOCX_TYPES.as_bytes().to_vec(), true),
        ("_rels/.rels".to_string(), RELS.as_bytes().to_vec(), true),
        ("word/document.xml".to_string(), xml.into_bytes(), true),
        ("word/styles.xml".to_string(), styles(), true),
        ("docProps/core.xml".to_string(), b"<?xml version=\"1.0\"?><cp:coreProperties><dc:creator>Office</dc:creator></cp:coreProperties>".to_vec(), true),
    ];
    if let Some(p) = picture {
        members.push(("word/media/image1.jpeg".to_string(), p.to_vec(), false));
    }
    zip(&members)
}

fn styles() -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><w:styles>");
    for (i, n) in ["Normal", "Heading1", "Heading2", "Title", "Quote", "ListParagraph", "TableGrid", "Caption"].iter().enumerate() {
        s.push_str(&format!("<w:style w:type=\"paragraph\" w:styleId=\"{n}\"><w:name w:val=\"{n}\"/><w:rPr><w:sz w:val=\"{}\"/></w:rPr></w:style>", 20 + 2 * i));
    }
    s.push_str("</w:styles>");
    s.into_bytes()
}

/// A .xlsx: the CSV as SpreadsheetML, deflated.
pub fn xlsx(csv: &str) -> Vec<u8> {
    let mut xml = String::with_capacity(csv.len() * 3);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<worksheet xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\"><sheetData>");
    for (r, line) in csv.lines().enumerate() {
        xml.push_str(&format!("<row r=\"{}\">", r + 1));
        for (c, cell) in line.split(',').enumerate() {
            let col = (b'A' + u8::try_from(c % 26).expect("below 26")) as char;
            if cell.parse::<f64>().is_ok() {
                xml.push_str(&format!("<c r=\"{col}{}\"><v>{cell}</v></c>", r + 1));
            } else {
                xml.push_str(&format!("<c r=\"{col}{}\" t=\"inlineStr\"><is><t>{cell}</t></is></c>", r + 1));
            }
        }
        xml.push_str("</row>");
    }
    xml.push_str("</sheetData></worksheet>");
    zip(&[
        ("[Content_Types].xml".to_string(), DOCX_TYPES.replace("word/document", "xl/worksheets/sheet1").into_bytes(), true),
        ("_rels/.rels".to_string(), RELS.as_bytes().to_vec(), true),
        ("xl/workbook.xml".to_string(), b"<?xml version=\"1.0\"?><workbook><sheets><sheet name=\"Sheet1\" sheetId=\"1\"/></sheets></workbook>".to_vec(), true),
        ("xl/worksheets/sheet1.xml".to_string(), xml.into_bytes(), true),
    ])
}

/// A JPEG: SOI, JFIF, quantisation and Huffman tables, then entropy-coded data (which no
/// compressor shrinks), EOI.
pub fn jpeg(rng: &mut Rand, len: usize) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 72, 0, 72, 0, 0];
    for table in 0..2u8 {
        out.extend_from_slice(&[0xFF, 0xDB, 0, 67, table]);
        out.extend((0..64u8).map(|i| 2 + i / 3 + table * 3));
    }
    out.extend_from_slice(&[0xFF, 0xC4, 0, 31, 0]);
    out.extend((0..28u8).map(|i| i / 2));
    out.extend_from_slice(&[0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 17, 3, 17, 0, 63, 0]);
    let payload = len.saturating_sub(out.len() + 2);
    out.extend_from_slice(&random_bytes(rng, payload));
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A PNG: signature, IHDR, IDAT (deflated pixels: incompressible), IEND.
pub fn png(rng: &mut Rand, len: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&u32::try_from(data.len()).expect("a generated PNG chunk is far below 4 GiB").to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    chunk(&mut out, b"IHDR", &[0, 0, 4, 0, 0, 0, 3, 0, 8, 6, 0, 0, 0]);
    let idat = random_bytes(rng, len.saturating_sub(57));
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A PDF: text objects, deflated content streams and (for scans) DCT images.
pub fn pdf(rng: &mut Rand, len: usize, scan: bool) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
    let mut obj = 3;
    while out.len() < len {
        let stream = if scan {
            let n = rng.gen_range(64 * 1024..512 * 1024);
            random_bytes(rng, n)
        } else {
            let n = rng.gen_range(8 * 1024..64 * 1024);
            deflate(prose(rng, n).as_bytes())
        };
        let filter = if scan { "/DCTDecode" } else { "/FlateDecode" };
        out.extend_from_slice(format!("{obj} 0 obj\n<< /Length {} /Filter {filter} >>\nstream\n", stream.len()).as_bytes());
        out.extend_from_slice(&stream);
        out.extend_from_slice(b"\nendstream\nendobj\n");
        obj += 1;
    }
    out.extend_from_slice(format!("xref\n0 {obj}\ntrailer\n<< /Size {obj} /Root 1 0 R >>\nstartxref\n{}\n%%EOF\n", out.len()).as_bytes());
    out
}

/// A size drawn log-uniformly between `lo` and `hi`.
pub fn log_size(rng: &mut Rand, lo: usize, hi: usize) -> usize {
    let lo = lo.max(1);
    let (a, b) = ((lo as f64).ln(), (hi.max(lo + 1) as f64).ln());
    whole(rng.gen_range(a..b).exp())
}

/// A count or size worked out in floating point (a share of a count or of a size, a
/// log-uniform size), its fraction dropped; callers `.round()` first where they mean the nearest.
// why: truncation is the intent, and bounded: every caller passes a finite value >= 0 that is a
// count or size of the generated data times a factor of at most 1.5 (the scale, a share, a
// jitter), or the exp() of a value below a usize's logarithm, so it fits a usize; and `as`
// saturates rather than wraps should that ever not hold.
#[allow(clippy::cast_possible_truncation)]
pub fn whole(x: f64) -> usize {
    x as usize
}

/// Small edits of a text: a few lines replaced or inserted at random places, as an editor
/// saving a changed document does; the rest of the bytes stay where they were.
pub fn edit_text(rng: &mut Rand, data: &[u8], mut line: impl FnMut(&mut Rand) -> String) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        if out.is_empty() {
            out.extend_from_slice(line(rng).as_bytes());
            continue;
        }
        let at = rng.gen_range(0..out.len());
        let start = out[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let end = out[at..].iter().position(|b| *b == b'\n').map_or(out.len(), |p| at + p + 1);
        let new = (0..rng.gen_range(1..4)).map(|_| line(rng)).collect::<String>();
        if rng.gen_bool(0.5) {
            out.splice(start..end, new.into_bytes());
        } else {
            out.splice(start..start, new.into_bytes());
        }
    }
    out
}
