//! The datasets and their normal nights: a file share of office documents, source trees
//! with their git objects and vendored packages, a server's configs, logs and database
//! dumps, and a restic repository pushed as files. Every night edits 1-5% of the files the
//! way their programs do, grows and rotates logs, writes new archives, and now and then
//! upgrades a package, renames a directory or prunes; all from fixed seeds.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::content::{self as c, Lang, Rand};
use crate::vault::{File, Source, Tree};

/// How big the generated datasets are: `bytes` scales file sizes, `files` file counts.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub files: f64,
    pub bytes: f64,
    pub nights: u32,
}

impl Scale {
    fn n(&self, full: usize) -> usize {
        c::whole((full as f64 * self.files).round()).max(1)
    }

    fn b(&self, full: usize) -> usize {
        c::whole(full as f64 * self.bytes).max(64)
    }
}

pub trait Corpus: Send {
    fn name(&self) -> &'static str;
    /// Whether the content-based signals can see this dataset's files change at all (a
    /// restic repository is encrypted already).
    fn content_visible(&self) -> bool {
        true
    }
    fn tree(&self) -> &Tree;
    /// Night `n` (from 1): the day's normal changes.
    fn night(&mut self, n: u32);
}

pub fn all(scale: Scale, seed: u64) -> Vec<Box<dyn Corpus>> {
    vec![Box::new(Fileshare::new(scale, seed ^ 0x0f11)), Box::new(SourceTrees::new(scale, seed ^ 0x50c3)), Box::new(Server::new(scale, seed ^ 0x5e4e)), Box::new(Restic::new(scale, seed ^ 0x4e57))]
}

const KB: usize = 1024;
const MB: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Docx,
    Xlsx,
    Pdf,
    Scan,
    Txt,
    Csv,
    Rtf,
    Md,
    Jpg,
    Png,
    Rs,
    C,
    H,
    Py,
    Svg,
    Html,
    Css,
    Js,
    Conf,
}

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::Docx => "docx",
            Kind::Xlsx => "xlsx",
            Kind::Pdf | Kind::Scan => "pdf",
            Kind::Txt => "txt",
            Kind::Csv => "csv",
            Kind::Rtf => "rtf",
            Kind::Md => "md",
            Kind::Jpg => "jpg",
            Kind::Png => "png",
            Kind::Rs => "rs",
            Kind::C => "c",
            Kind::H => "h",
            Kind::Py => "py",
            Kind::Svg => "svg",
            Kind::Html => "html",
            Kind::Css => "css",
            Kind::Js => "js",
            Kind::Conf => "conf",
        }
    }

    fn of(path: &str) -> Option<Kind> {
        let ext = path.rsplit_once('.')?.1;
        [
            Kind::Docx,
            Kind::Xlsx,
            Kind::Pdf,
            Kind::Txt,
            Kind::Csv,
            Kind::Rtf,
            Kind::Md,
            Kind::Jpg,
            Kind::Png,
            Kind::Rs,
            Kind::C,
            Kind::H,
            Kind::Py,
            Kind::Svg,
            Kind::Html,
            Kind::Css,
            Kind::Js,
            Kind::Conf,
        ]
        .into_iter()
        .find(|k| k.ext() == ext)
    }

    fn lang(self) -> Lang {
        match self {
            Kind::Rs => Lang::Rust,
            Kind::H => Lang::Header,
            Kind::Py => Lang::Python,
            _ => Lang::C,
        }
    }
}

/// A new file of a kind, sized for `scale`.
fn make(rng: &mut Rand, kind: Kind, scale: &Scale) -> File {
    let (lo, hi) = match kind {
        Kind::Docx => (scale.b(4 * KB), scale.b(160 * KB)),
        Kind::Xlsx => (scale.b(2 * KB), scale.b(600 * KB)),
        Kind::Pdf => (scale.b(30 * KB), scale.b(3 * MB)),
        Kind::Scan => (scale.b(100 * KB), scale.b(2 * MB)),
        Kind::Txt => (300, scale.b(200 * KB)),
        Kind::Csv => (scale.b(2 * KB), scale.b(6 * MB)),
        Kind::Rtf => (scale.b(4 * KB), scale.b(800 * KB)),
        Kind::Md => (300, scale.b(40 * KB)),
        Kind::Jpg => (scale.b(60 * KB), scale.b(3 * MB)),
        Kind::Png => (2 * KB, scale.b(600 * KB)),
        Kind::Rs | Kind::C | Kind::H | Kind::Py => (400, scale.b(60 * KB).max(800)),
        Kind::Html => (KB, scale.b(80 * KB)),
        Kind::Css | Kind::Js => (KB, scale.b(300 * KB)),
        Kind::Svg | Kind::Conf => (0, 1),
    };
    let size = c::log_size(rng, lo, hi);
    match kind {
        Kind::Docx => {
            let text = c::prose(rng, size);
            let picture = if rng.gen_bool(0.3) {
                let len = c::log_size(rng, scale.b(40 * KB), scale.b(1200 * KB));
                Some(Arc::new(c::jpeg(rng, len)))
            } else {
                None
            };
            File::with_source(c::docx(&text, picture.as_deref().map(Vec::as_slice)), Source::Docx { text: Arc::new(text), picture })
        }
        Kind::Xlsx => {
            let csv = c::csv(rng, size);
            File::with_source(c::xlsx(&csv), Source::Xlsx { csv: Arc::new(csv) })
        }
        Kind::Pdf => File::new(c::pdf(rng, size, false)),
        Kind::Scan => File::new(c::pdf(rng, size, true)),
        Kind::Txt | Kind::Md => File::new(c::prose(rng, size).into_bytes()),
        Kind::Csv => File::new(c::csv(rng, size).into_bytes()),
        Kind::Rtf => File::new(c::rtf(rng, size).into_bytes()),
        Kind::Jpg => File::new(c::jpeg(rng, size)),
        Kind::Png => File::new(c::png(rng, size)),
        Kind::Rs | Kind::C | Kind::H | Kind::Py => File::new(c::code(rng, kind.lang(), size).into_bytes()),
        Kind::Svg => File::new(c::svg(rng).into_bytes()),
        Kind::Html => File::new(c::html(rng, size).into_bytes()),
        Kind::Css | Kind::Js => File::new(c::code(rng, Lang::C, size).into_bytes()),
        Kind::Conf => File::new(conf(rng).into_bytes()),
    }
}

fn conf(rng: &mut Rand) -> String {
    let mut s = format!("# {}\n", c::prose_line(rng).trim_end());
    for _ in 0..rng.gen_range(5..120) {
        s.push_str(&conf_line(rng));
    }
    s
}

fn conf_line(rng: &mut Rand) -> String {
    format!("{}_{} = {}\n", c::word(rng), c::word(rng), rng.gen_range(0..100_000))
}

/// A file saved again after a small edit, by the program that owns its kind.
fn edit(rng: &mut Rand, path: &str, file: &File, scale: &Scale, day: u32) -> File {
    let data = file.content.bytes();
    match (&file.source, Kind::of(path)) {
        (Source::Docx { text, picture }, _) => {
            let text = String::from_utf8(c::edit_text(rng, text.as_bytes(), c::prose_line)).expect("prose is UTF-8");
            File::with_source(c::docx(&text, picture.as_deref().map(Vec::as_slice)), Source::Docx { text: Arc::new(text), picture: picture.clone() })
        }
        (Source::Xlsx { csv }, _) => {
            let mut id = 100_000 + u64::from(day) * 1000;
            let csv = String::from_utf8(c::edit_text(rng, csv.as_bytes(), |r| {
                id += 1;
                c::csv_row(r, id)
            }))
            .expect("CSV is UTF-8");
            File::with_source(c::xlsx(&csv), Source::Xlsx { csv: Arc::new(csv) })
        }
        (_, Some(Kind::Csv)) => {
            let mut id = 200_000 + u64::from(day) * 1000;
            let mut out = if rng.gen_bool(0.5) { data.to_vec() } else { c::edit_text(rng, &data, |r| c::csv_row(r, 7)) };
            for _ in 0..rng.gen_range(1..200) {
                id += 1;
                out.extend_from_slice(c::csv_row(rng, id).as_bytes());
            }
            File::new(out)
        }
        (_, Some(Kind::Txt | Kind::Md | Kind::Html)) => File::new(c::edit_text(rng, &data, c::prose_line)),
        (_, Some(Kind::Rtf)) => File::new(c::edit_text(rng, &data, |r| format!("\\pard\\f0\\fs22 {}\\par\n", c::prose_line(r).trim_end()))),
        (_, Some(k @ (Kind::Rs | Kind::C | Kind::H | Kind::Py | Kind::Css | Kind::Js))) => File::new(c::edit_text(rng, &data, |r| c::code_line(r, k.lang(), 4))),
        (_, Some(Kind::Conf)) => File::new(c::edit_text(rng, &data, conf_line)),
        (_, Some(Kind::Svg)) => File::new(c::svg(rng).into_bytes()),
        // A PDF exported again, a photo retouched: a new file of about the same size.
        (_, Some(Kind::Pdf)) => File::new(c::pdf(rng, data.len(), data.windows(9).take(4096).any(|w| w == b"DCTDecode"))),
        (_, Some(Kind::Jpg)) => File::new(c::jpeg(rng, data.len())),
        (_, Some(Kind::Png)) => File::new(c::png(rng, data.len())),
        _ => {
            let _ = scale;
            file.clone()
        }
    }
}

fn pick<T: Copy>(rng: &mut Rand, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|w| w.1).sum();
    let mut x = rng.gen_range(0..total);
    for (t, w) in weighted {
        if x < *w {
            return *t;
        }
        x -= w;
    }
    weighted[0].0
}

fn file_name(rng: &mut Rand, kind: Kind) -> String {
    let stem = match rng.gen_range(0..4) {
        0 => format!("{}-{}", c::word(rng), c::word(rng)),
        1 => format!("{} {} {}", capitalize(c::word(rng)), c::word(rng), c::date(rng.gen_range(0..336))),
        2 => format!("{}_{}_v{}", capitalize(c::word(rng)), c::word(rng), rng.gen_range(1..9)),
        _ => format!("{}{}", c::word(rng), rng.gen_range(1..999)),
    };
    format!("{stem}.{}", kind.ext())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// A path for a new file in `folder` that is not taken yet.
fn fresh_path(rng: &mut Rand, tree: &Tree, folder: &str, kind: Kind) -> String {
    loop {
        let path = format!("{folder}/{}", file_name(rng, kind));
        if !tree.contains_key(&path) {
            return path;
        }
    }
}

/// Up to `n` distinct paths of the tree that `keep` accepts.
fn sample(rng: &mut Rand, tree: &Tree, n: usize, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut paths: Vec<&String> = tree.keys().filter(|p| keep(p)).collect();
    paths.shuffle(rng);
    paths.into_iter().take(n).cloned().collect()
}

/// Edits 1-5% of the files `keep` accepts.
fn nightly_edits(rng: &mut Rand, tree: &mut Tree, scale: &Scale, day: u32, keep: impl Fn(&str) -> bool) {
    let eligible = tree.keys().filter(|p| keep(p)).count();
    let n = c::whole((eligible as f64 * rng.gen_range(0.01..0.05)).round());
    for path in sample(rng, tree, n, keep) {
        let file = tree[&path].clone();
        tree.insert(path.clone(), edit(rng, &path, &file, scale, day));
    }
}

fn rename_dir(tree: &mut Tree, from: &str, to: &str) {
    let moved: Vec<String> = tree.keys().filter(|p| p.starts_with(&format!("{from}/"))).cloned().collect();
    for p in moved {
        let f = tree.remove(&p).expect("listed");
        tree.insert(format!("{to}{}", &p[from.len()..]), f);
    }
}

// ---- a file share -------------------------------------------------------------------

pub struct Fileshare {
    tree: Tree,
    rng: Rand,
    scale: Scale,
    folders: Vec<String>,
    projects: Vec<String>,
    scans: String,
}

const OFFICE_MIX: &[(Kind, u32)] = &[(Kind::Docx, 22), (Kind::Xlsx, 12), (Kind::Pdf, 9), (Kind::Txt, 10), (Kind::Csv, 8), (Kind::Rtf, 4), (Kind::Md, 4), (Kind::Jpg, 17), (Kind::Png, 7)];

impl Fileshare {
    fn new(scale: Scale, seed: u64) -> Fileshare {
        let mut rng = Rand::seed_from_u64(seed);
        let mut folders = Vec::new();
        let mut projects = Vec::new();
        for dept in ["Finance", "HR", "Sales", "Engineering", "Legal", "Marketing", "Operations", "Management"] {
            for year in ["2022", "2023", "2024"] {
                for sub in ["", "/Reports", "/Meetings", "/Contracts"] {
                    folders.push(format!("{dept}/{year}{sub}"));
                }
            }
        }
        for _ in 0..12 {
            let p = format!("Projects/{}-{}", capitalize(c::word(&mut rng)), rng.gen_range(100..999));
            for sub in ["docs", "data", "media", "deliverables"] {
                folders.push(format!("{p}/{sub}"));
            }
            projects.push(p);
        }
        let scans = "Operations/Scans".to_string();
        let mut tree = Tree::new();
        for _ in 0..scale.n(2000) {
            let kind = pick(&mut rng, OFFICE_MIX);
            let folder = folders.choose(&mut rng).expect("folders").clone();
            let path = fresh_path(&mut rng, &tree, &folder, kind);
            tree.insert(path, make(&mut rng, kind, &scale));
        }
        for _ in 0..scale.n(260) {
            let kind = if rng.gen_bool(0.6) { Kind::Scan } else { Kind::Jpg };
            let path = format!("{scans}/scan-{:06}.{}", rng.gen_range(0..1_000_000), kind.ext());
            tree.insert(path, make(&mut rng, kind, &scale));
        }
        Fileshare { tree, rng, scale, folders, projects, scans }
    }
}

impl Corpus for Fileshare {
    fn name(&self) -> &'static str {
        "file share"
    }

    fn tree(&self) -> &Tree {
        &self.tree
    }

    fn night(&mut self, n: u32) {
        let (rng, tree, scale) = (&mut self.rng, &mut self.tree, &self.scale);
        // Photos and scans are rarely touched again; documents are.
        nightly_edits(rng, tree, scale, n, |p| !p.ends_with(".jpg") || rng_free_bool(p));
        let files = tree.len();
        for _ in 0..c::whole((files as f64 * rng.gen_range(0.002..0.01)).round()) {
            let kind = pick(rng, OFFICE_MIX);
            let folder = self.folders.choose(rng).expect("folders").clone();
            let path = fresh_path(rng, tree, &folder, kind);
            tree.insert(path, make(rng, kind, scale));
        }
        for _ in 0..rng.gen_range(2..12) {
            let kind = if rng.gen_bool(0.6) { Kind::Scan } else { Kind::Jpg };
            tree.insert(format!("{}/scan-{:06}.{}", self.scans, rng.gen_range(0..1_000_000), kind.ext()), make(rng, kind, scale));
        }
        let gone = c::whole((files as f64 * rng.gen_range(0.0..0.004)).round());
        for p in sample(rng, tree, gone, |_| true) {
            tree.remove(&p);
        }
        // Deliverables: a project's documents zipped for a customer.
        if n % 5 == 2 {
            let project = self.projects.choose(rng).expect("projects").clone();
            let count = rng.gen_range(3..10);
            let docs = sample(rng, tree, count, |p| p.starts_with(&project) && !p.ends_with(".zip"));
            let members: Vec<(String, Vec<u8>, bool)> = docs.iter().map(|p| (p.rsplit('/').next().unwrap_or(p).to_string(), tree[p].content.bytes().into_owned(), true)).collect();
            if !members.is_empty() {
                tree.insert(format!("{project}/deliverables/delivery-{}.zip", c::date(n)), File::new(c::zip(&members)));
            }
        }
        // The IT team's guidelines: a small text that talks of encryption, payments and
        // whom to contact, as real ones do.
        if n == self.scale.nights / 3 {
            tree.insert("Management/2024/IT security guidelines.txt".into(), File::new(IT_GUIDELINES.as_bytes().to_vec()));
        }
        // The scanner's folder renamed once, at the end of the year.
        if n == self.scale.nights * 2 / 3 {
            rename_dir(tree, &self.scans, "Operations/Scans 2023");
            self.scans = "Operations/Scans 2024".into();
        }
    }
}

/// Photos: one in thirty of those drawn for an edit is retouched (a hash of the name
/// decides, so the choice is stable).
fn rng_free_bool(path: &str) -> bool {
    path.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 30 == 0
}

const IT_GUIDELINES: &str = "IT security guidelines\n\nAll company laptops are encrypted with full-disk encryption; do not disable it. \
Backups of the file share are encrypted before they leave the building.\n\nNever send card numbers or payment details by e-mail. Invoices \
with changed bank details must be confirmed by phone before any payment is made.\n\nIf you lose a device or suspect phishing, contact us \
at the IT helpdesk (extension 4400) or write to us at helpdesk@example.com. We will lock the account and help you restore your files \
from the nightly backup.\n";

// ---- source trees ---------------------------------------------------------------------

pub struct SourceTrees {
    tree: Tree,
    rng: Rand,
    scale: Scale,
    repos: Vec<String>,
    packages: Vec<(String, u32)>,
    loose: Vec<String>,
    release: u32,
}

const CODE_MIX: &[(Kind, u32)] = &[(Kind::Rs, 30), (Kind::C, 20), (Kind::H, 10), (Kind::Py, 25), (Kind::Md, 6), (Kind::Txt, 3), (Kind::Png, 4), (Kind::Js, 2)];

impl SourceTrees {
    fn new(scale: Scale, seed: u64) -> SourceTrees {
        let mut rng = Rand::seed_from_u64(seed);
        let mut tree = Tree::new();
        let repos: Vec<String> = ["billing", "gateway", "firmware"].iter().map(|r| format!("repos/{r}")).collect();
        for repo in &repos {
            let dirs: Vec<String> = ["src", "src/net", "src/store", "src/util", "src/legacy", "tests", "docs", "assets", "tools", "include", "lib"].iter().map(|d| format!("{repo}/{d}")).collect();
            for _ in 0..scale.n(700) {
                let kind = pick(&mut rng, CODE_MIX);
                let folder = dirs.choose(&mut rng).expect("dirs").clone();
                let path = fresh_path(&mut rng, &tree, &folder, kind);
                tree.insert(path, make(&mut rng, kind, &scale));
            }
            // The repository's packed history: zlib streams, incompressible.
            let pack = scale.b(rng.gen_range(8 * MB..30 * MB));
            let id = hex(&mut rng, 20);
            tree.insert(format!("{repo}/.git/objects/pack/pack-{id}.pack"), File::new(c::random_bytes(&mut rng, pack)));
            tree.insert(format!("{repo}/.git/objects/pack/pack-{id}.idx"), File::new(c::random_bytes(&mut rng, pack / 40)));
            tree.insert(format!("{repo}/.git/config"), File::new(b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n".to_vec()));
        }
        let mut packages = Vec::new();
        for (i, pkg) in ["serde-json", "tokio-util", "libpng", "zlib-ng", "requests", "iconpack"].iter().enumerate() {
            let version = 10 + u32::try_from(i).expect("six packages");
            let dir = format!("{}/vendor/{pkg}-1.{version}", repos[0]);
            if *pkg == "iconpack" {
                // An icon set: hundreds of SVGs in one folder.
                for k in 0..scale.n(320) {
                    tree.insert(format!("{dir}/svg/icon-{k:04}.svg"), make(&mut rng, Kind::Svg, &scale));
                }
            } else {
                for _ in 0..scale.n(rng.gen_range(40..160)) {
                    let kind = pick(&mut rng, CODE_MIX);
                    let sub = ["src", "include", "tests", "examples"].choose(&mut rng).expect("subs");
                    let path = fresh_path(&mut rng, &tree, &format!("{dir}/{sub}"), kind);
                    tree.insert(path, make(&mut rng, kind, &scale));
                }
            }
            packages.push((format!("{}/vendor/{pkg}", repos[0]), version));
        }
        SourceTrees { tree, rng, scale, repos, packages, loose: Vec::new(), release: 1 }
    }

    /// A package replaced by its next version: most files the same, some edited, a few
    /// gone, a few new.
    fn upgrade(&mut self, which: usize) {
        let (base, version) = self.packages[which].clone();
        let (from, to) = (format!("{base}-1.{version}"), format!("{base}-1.{}", version + 1));
        let old: Vec<String> = self.tree.keys().filter(|p| p.starts_with(&format!("{from}/"))).cloned().collect();
        let mut folders = Vec::new();
        for p in old {
            let f = self.tree.remove(&p).expect("listed");
            let new_path = format!("{to}{}", &p[from.len()..]);
            folders.push(new_path.rsplit_once('/').map(|x| x.0.to_string()).unwrap_or_default());
            let roll: f64 = self.rng.gen();
            if roll < 0.03 {
                continue;
            }
            let f = if roll < 0.15 { edit(&mut self.rng, &p, &f, &self.scale, 0) } else { f };
            self.tree.insert(new_path, f);
        }
        for _ in 0..folders.len() / 30 + 1 {
            let kind = pick(&mut self.rng, CODE_MIX);
            let folder = folders.choose(&mut self.rng).expect("a package has files").clone();
            let path = fresh_path(&mut self.rng, &self.tree, &folder, kind);
            let f = make(&mut self.rng, kind, &self.scale);
            self.tree.insert(path, f);
        }
        self.packages[which].1 += 1;
    }
}

fn hex(rng: &mut Rand, bytes: usize) -> String {
    c::random_bytes(rng, bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Corpus for SourceTrees {
    fn name(&self) -> &'static str {
        "source trees"
    }

    fn tree(&self) -> &Tree {
        &self.tree
    }

    fn night(&mut self, n: u32) {
        let (rng, tree, scale) = (&mut self.rng, &mut self.tree, &self.scale);
        nightly_edits(rng, tree, scale, n, |p| !p.contains("/.git/") && !p.contains("/vendor/") && !p.ends_with(".png") && !p.ends_with(".tar.gz"));
        let files = tree.len();
        for repo in &self.repos {
            for _ in 0..rng.gen_range(0..(files / 300).max(2)) {
                let kind = pick(rng, CODE_MIX);
                let folder = format!("{repo}/{}", ["src", "src/net", "src/store", "tests", "docs"].choose(rng).expect("dirs"));
                let path = fresh_path(rng, tree, &folder, kind);
                tree.insert(path, make(rng, kind, scale));
            }
            // The day's commits: loose objects, each a zlib stream.
            for _ in 0..rng.gen_range(10..60) {
                let id = hex(rng, 20);
                let path = format!("{repo}/.git/objects/{}/{}", &id[..2], &id[2..]);
                let len = c::log_size(rng, 200, scale.b(40 * KB));
                let body = c::code(rng, Lang::Rust, len);
                tree.insert(path.clone(), File::new(c::deflate(body.as_bytes())));
                self.loose.push(path);
            }
        }
        let gone = c::whole((files as f64 * rng.gen_range(0.0..0.003)).round());
        for p in sample(rng, tree, gone, |p| !p.contains("/.git/")) {
            tree.remove(&p);
        }
        // git gc once a week: the loose objects become one more pack.
        if n % 7 == 0 {
            for repo in &self.repos {
                let mine: Vec<String> = self.loose.iter().filter(|p| p.starts_with(repo.as_str())).cloned().collect();
                let bytes: u64 = mine.iter().filter_map(|p| tree.remove(p)).map(|f| f.size).sum();
                let id = hex(rng, 20);
                let pack = (usize::try_from(bytes).expect("generated in memory") * 6 / 10).max(4096);
                tree.insert(format!("{repo}/.git/objects/pack/pack-{id}.pack"), File::new(c::random_bytes(rng, pack)));
                tree.insert(format!("{repo}/.git/objects/pack/pack-{id}.idx"), File::new(c::random_bytes(rng, pack / 40 + 1024)));
            }
            self.loose.clear();
        }
        // A release tarball every week.
        if n % 7 == 3 {
            let members: Vec<(String, Vec<u8>)> = sample(rng, tree, 60, |p| p.starts_with(&self.repos[1]) && (p.ends_with(".rs") || p.ends_with(".md")))
                .into_iter()
                .map(|p| (p.clone(), tree[&p].content.bytes().into_owned()))
                .collect();
            tree.insert(format!("{}/dist/gateway-0.{}.0.tar.gz", self.repos[1], self.release), File::new(c::gzip(&c::tar(&members))));
            self.release += 1;
        }
        let nights = self.scale.nights;
        if n == nights / 3 {
            self.upgrade(0);
        }
        if n == nights / 2 {
            self.upgrade(5);
        }
        if n == nights * 2 / 3 + 1 {
            self.upgrade(3);
        }
        if n == nights * 3 / 4 {
            rename_dir(&mut self.tree, "repos/billing/src/legacy", "repos/billing/src/compat");
        }
    }
}

// ---- a server ------------------------------------------------------------------------

pub struct Server {
    tree: Tree,
    rng: Rand,
    scale: Scale,
    logs: Vec<Log>,
    dumps: Vec<(String, Vec<&'static str>)>,
    backups: Vec<String>,
    deploy: u32,
}

struct Log {
    path: String,
    service: &'static str,
    daily_bytes: usize,
    /// Rotated every night, or once a week.
    daily: bool,
    keep: u32,
}

impl Server {
    fn new(scale: Scale, seed: u64) -> Server {
        let mut rng = Rand::seed_from_u64(seed);
        let mut tree = Tree::new();
        for _ in 0..scale.n(260) {
            let dir = ["etc", "etc/nginx/sites-available", "etc/systemd/system", "etc/app", "etc/ssl", "etc/cron.d", "etc/postgresql/15/main"].choose(&mut rng).expect("dirs");
            let path = fresh_path(&mut rng, &tree, dir, Kind::Conf);
            tree.insert(path, make(&mut rng, Kind::Conf, &scale));
        }
        let services = [
            ("nginx/access.log", "nginx", 3 * MB, true),
            ("nginx/error.log", "nginx", 60 * KB, false),
            ("app/app.log", "app", 2 * MB, true),
            ("app/worker.log", "worker", 800 * KB, true),
            ("postgresql/postgresql-15-main.log", "postgres", 300 * KB, false),
            ("syslog", "systemd", 1200 * KB, true),
            ("auth.log", "sshd", 100 * KB, false),
            ("kern.log", "kernel", 30 * KB, false),
            ("cron.log", "cron", 40 * KB, false),
            ("mail.log", "postfix", 200 * KB, false),
            ("app/audit.log", "audit", 400 * KB, false),
            ("dpkg.log", "dpkg", 5 * KB, false),
        ];
        let mut logs = Vec::new();
        for (path, service, daily, is_daily) in services {
            let log = Log { path: format!("var/log/{path}"), service, daily_bytes: scale.b(daily), daily: is_daily, keep: if is_daily { 7 } else { 4 } };
            // A history of rotations already there.
            tree.insert(format!("{}.1", log.path), File::new(c::log_text(&mut rng, service, 0, log.daily_bytes * if is_daily { 1 } else { 7 }).into_bytes()));
            for k in 2..=log.keep {
                tree.insert(format!("{}.{k}.gz", log.path), File::new(c::gzip(c::log_text(&mut rng, service, 0, log.daily_bytes * if is_daily { 1 } else { 7 }).as_bytes())));
            }
            tree.insert(log.path.clone(), File::new(c::log_text(&mut rng, service, 0, log.daily_bytes / 2).into_bytes()));
            logs.push(log);
        }
        let dumps = vec![
            ("srv/dumps/app.sql".to_string(), vec!["customers", "orders", "order_items", "invoices", "products"], scale.b(24 * MB)),
            ("srv/dumps/crm.sql".to_string(), vec!["contacts", "notes"], scale.b(6 * MB)),
            ("srv/dumps/wiki.sql".to_string(), vec!["pages", "revisions"], scale.b(12 * MB)),
        ];
        let mut dump_tables = Vec::new();
        for (path, tables, bytes) in dumps {
            tree.insert(path.clone(), File::new(c::sql_dump(&mut rng, &tables, bytes).into_bytes()));
            dump_tables.push((path, tables));
        }
        let mut backups = Vec::new();
        for day in 0..7u32 {
            let path = format!("var/backups/db/crm-{}.sql.gz", c::date(day));
            tree.insert(path.clone(), File::new(c::gzip(c::sql_dump(&mut rng, &["contacts", "notes"], scale.b(4 * MB)).as_bytes())));
            backups.push(path);
        }
        const WWW_MIX: &[(Kind, u32)] = &[(Kind::Html, 30), (Kind::Css, 8), (Kind::Js, 12), (Kind::Png, 20), (Kind::Jpg, 20), (Kind::Svg, 10)];
        for _ in 0..scale.n(450) {
            let kind = pick(&mut rng, WWW_MIX);
            let dir = ["srv/www/site", "srv/www/site/products", "srv/www/site/blog", "srv/www/site/static/img", "srv/www/site/static/css", "srv/www/site/static/js"].choose(&mut rng).expect("dirs");
            let path = fresh_path(&mut rng, &tree, dir, kind);
            tree.insert(path, make(&mut rng, kind, &scale));
        }
        const HOME_MIX: &[(Kind, u32)] = &[(Kind::Docx, 20), (Kind::Xlsx, 10), (Kind::Txt, 20), (Kind::Py, 15), (Kind::Md, 10), (Kind::Pdf, 10), (Kind::Jpg, 10), (Kind::Csv, 5)];
        for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
            for _ in 0..scale.n(60) {
                let kind = pick(&mut rng, HOME_MIX);
                let dir = format!("home/{user}/{}", ["Documents", "Downloads", "scripts", "notes"].choose(&mut rng).expect("dirs"));
                let path = fresh_path(&mut rng, &tree, &dir, kind);
                tree.insert(path, make(&mut rng, kind, &scale));
            }
        }
        Server { tree, rng, scale, logs, dumps: dump_tables, backups, deploy: 1 }
    }
}

impl Corpus for Server {
    fn name(&self) -> &'static str {
        "server"
    }

    fn tree(&self) -> &Tree {
        &self.tree
    }

    fn night(&mut self, n: u32) {
        let (rng, tree, scale) = (&mut self.rng, &mut self.tree, &self.scale);
        nightly_edits(rng, tree, scale, n, |p| p.starts_with("etc/") || p.starts_with("home/") || (p.starts_with("srv/www/") && !p.ends_with(".png") && !p.ends_with(".jpg")));
        // Logs grow; logrotate with compress and delaycompress: log -> log.1 -> log.2.gz ...
        for log in &self.logs {
            let len = c::whole(log.daily_bytes as f64 * rng.gen_range(0.5..1.5));
            let growth = c::log_text(rng, log.service, n, len);
            let current = tree[&log.path].content.bytes().into_owned();
            if log.daily || n % 7 == 0 {
                for k in (2..=log.keep).rev() {
                    let from = if k == 2 { format!("{}.1", log.path) } else { format!("{}.{}.gz", log.path, k - 1) };
                    let moved = if k == 2 { File::new(c::gzip(&tree[&from].content.bytes())) } else { tree[&from].clone() };
                    tree.insert(format!("{}.{k}.gz", log.path), moved);
                }
                let mut rotated = current;
                rotated.extend_from_slice(growth.as_bytes());
                tree.insert(format!("{}.1", log.path), File::new(rotated));
                tree.insert(log.path.clone(), File::new(c::log_text(rng, log.service, n + 1, 2000).into_bytes()));
            } else {
                let mut grown = current;
                grown.extend_from_slice(growth.as_bytes());
                tree.insert(log.path.clone(), File::new(grown));
            }
        }
        // Database dumps: the same tables again, with rows updated and rows added.
        for (path, tables) in &self.dumps {
            let data = tree[path].content.bytes().into_owned();
            let text = String::from_utf8(data).expect("dumps are UTF-8");
            let mut out = String::with_capacity(text.len() + 64 * KB);
            let mut id = 1_000_000 + u64::from(n) * 10_000;
            let mut table = tables[0];
            for line in text.split_inclusive('\n') {
                if let Some(t) = tables.iter().find(|t| line.starts_with(&format!("LOCK TABLES `{t}`"))) {
                    table = t;
                }
                if line.starts_with("UNLOCK TABLES") {
                    for _ in 0..rng.gen_range(10..c::whole(400.0 * scale.bytes).max(11)) {
                        id += 1;
                        out.push_str(&c::sql_row(rng, table, id));
                    }
                }
                if line.starts_with("INSERT") && rng.gen_range(0..400) == 0 {
                    let row_id: String = line.split('(').nth(1).and_then(|s| s.split(',').next()).unwrap_or("0").to_string();
                    out.push_str(&c::sql_row(rng, table, row_id.parse().unwrap_or(0)));
                } else {
                    out.push_str(line);
                }
            }
            tree.insert(path.clone(), File::new(out.into_bytes()));
        }
        // The nightly compressed backup; seven kept.
        let path = format!("var/backups/db/crm-{}.sql.gz", c::date(n + 7));
        tree.insert(path.clone(), File::new(c::gzip(c::sql_dump(rng, &["contacts", "notes"], scale.b(4 * MB)).as_bytes())));
        self.backups.push(path);
        let oldest = self.backups.remove(0);
        tree.remove(&oldest);
        // A deploy of the site every ten nights: new bundles under new hashed names.
        if n % 10 == 5 {
            let old: Vec<String> = tree.keys().filter(|p| p.starts_with("srv/www/site/static/js/bundle-")).cloned().collect();
            for p in old {
                tree.remove(&p);
            }
            for k in 0..12 {
                let f = make(rng, Kind::Js, scale);
                tree.insert(format!("srv/www/site/static/js/bundle-{k:02}.{}.js", hex(rng, 4)), f);
            }
            self.deploy += 1;
        }
    }
}

// ---- a restic repository ---------------------------------------------------------------

pub struct Restic {
    tree: Tree,
    rng: Rand,
    scale: Scale,
    snapshots: Vec<String>,
    packs: Vec<String>,
    indexes: Vec<String>,
}

impl Restic {
    fn new(scale: Scale, seed: u64) -> Restic {
        let mut rng = Rand::seed_from_u64(seed);
        let mut r = Restic { tree: Tree::new(), rng: Rand::seed_from_u64(seed ^ 1), scale, snapshots: Vec::new(), packs: Vec::new(), indexes: Vec::new() };
        let seed_of = |rng: &mut Rand| rng.gen::<u64>();
        r.tree.insert("config".into(), File::random(seed_of(&mut rng), 155));
        let key = format!(
            "{{\"created\":\"2023-06-01T10:00:00Z\",\"username\":\"backup\",\"hostname\":\"db01\",\"kdf\":\"scrypt\",\"N\":32768,\"r\":8,\"p\":5,\"salt\":\"{}\",\"data\":\"{}\"}}",
            hex(&mut rng, 32),
            hex(&mut rng, 120)
        );
        r.tree.insert(format!("keys/{}", hex(&mut rng, 32)), File::new(key.into_bytes()));
        for _ in 0..scale.n(150) {
            r.add_pack();
        }
        for _ in 0..14 {
            r.add_small("snapshots", 300, 900);
        }
        for _ in 0..12 {
            r.add_small("index", 8 * KB, 120 * KB);
        }
        r
    }

    fn add_pack(&mut self) {
        let id = hex(&mut self.rng, 32);
        let path = format!("data/{}/{id}", &id[..2]);
        let len = c::log_size(&mut self.rng, self.scale.b(2 * MB), self.scale.b(12 * MB));
        self.tree.insert(path.clone(), File::random(self.rng.gen(), len));
        self.packs.push(path);
    }

    fn add_small(&mut self, dir: &str, lo: usize, hi: usize) {
        let path = format!("{dir}/{}", hex(&mut self.rng, 32));
        let len = c::log_size(&mut self.rng, lo, hi);
        self.tree.insert(path.clone(), File::random(self.rng.gen(), len));
        if dir == "snapshots" {
            self.snapshots.push(path);
        } else {
            self.indexes.push(path);
        }
    }
}

impl Corpus for Restic {
    fn name(&self) -> &'static str {
        "restic repository"
    }

    fn content_visible(&self) -> bool {
        false
    }

    fn tree(&self) -> &Tree {
        &self.tree
    }

    fn night(&mut self, n: u32) {
        // restic backup: new packs, an index for them, a snapshot.
        for _ in 0..self.rng.gen_range(1..6) {
            self.add_pack();
        }
        self.add_small("index", 4 * KB, 60 * KB);
        self.add_small("snapshots", 300, 900);
        // restic forget --keep-daily 14 --prune, weekly: old snapshots go, unused packs are
        // deleted, partly used ones repacked, and the index is rewritten.
        if n % 7 == 0 {
            while self.snapshots.len() > 14 {
                let s = self.snapshots.remove(0);
                self.tree.remove(&s);
            }
            let drop = c::whole((self.packs.len() as f64 * self.rng.gen_range(0.02..0.06)).round()) + self.rng.gen_range(2..6);
            for _ in 0..drop.min(self.packs.len()) {
                let i = self.rng.gen_range(0..self.packs.len());
                let p = self.packs.swap_remove(i);
                self.tree.remove(&p);
            }
            for _ in 0..self.rng.gen_range(1..4) {
                self.add_pack();
            }
            for p in std::mem::take(&mut self.indexes) {
                self.tree.remove(&p);
            }
            for _ in 0..self.rng.gen_range(2..5) {
                self.add_small("index", 40 * KB, 400 * KB);
            }
        }
    }
}
