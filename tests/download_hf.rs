// SPDX-License-Identifier: MPL-2.0
//! `hf:ORG/NAME[@REVISION]` model paths against a fake Hugging Face Hub on
//! 127.0.0.1 (`HF_ENDPOINT`), serving the tiny checkpoint of
//! `tests/qwen/tiny` with the headers the Hub sends (`x-repo-commit`,
//! `etag`/`x-linked-etag`, `content-range`, `x-error-code`) and its
//! `/api/models/{repo}/revision/{rev}` listing. Nothing real is contacted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[path = "common/port.rs"]
mod port;
use port::ClosedPort;

use gstvsssummarize::download::{self, hf, DownloadEnv, HfSpec, ModelSource, Progress};
use serde_json::{json, Value};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/qwen/tiny");
const TOKEN: &str = "hf_TestSecretToken0123456789";
const C_MAIN: &str = "1111111111111111111111111111111111111111";
const C_V1: &str = "2222222222222222222222222222222222222222";

// ------------------------------------------------------------- fake Hub

/// A deterministic stand-in for a sha1 (40 hex) or sha256 (64 hex).
fn fake_hash(data: &[u8], hex_len: usize) -> String {
    let mut out = String::new();
    let mut seed = 0u64;
    while out.len() < hex_len {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= data.len() as u64;
        out.push_str(&format!("{h:016x}"));
        seed += 1;
    }
    out.truncate(hex_len);
    out
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(data))
}

#[derive(Clone)]
struct HubFile {
    name: String,
    data: Arc<Vec<u8>>,
    /// Stored with git LFS (the weights): etag = sha256.
    lfs: bool,
    etag: String,
}

impl HubFile {
    fn new(name: &str, data: Vec<u8>) -> HubFile {
        let lfs =
            name.ends_with(".safetensors") || name.ends_with(".bin") || name.ends_with(".pth");
        // LFS files: the real sha256 (it is checked); git files: a
        // stand-in for the git sha1 (not checked).
        let etag = if lfs {
            sha256_hex(&data)
        } else {
            fake_hash(&data, 40)
        };
        HubFile {
            name: name.to_string(),
            data: Arc::new(data),
            lfs,
            etag,
        }
    }
}

#[derive(Clone)]
struct HubRepo {
    id: String,
    refs: HashMap<String, String>,
    commits: HashMap<String, Vec<HubFile>>,
    /// Gated: files need `Authorization: Bearer TOKEN`.
    gated: bool,
}

impl HubRepo {
    fn new(id: &str, files: Vec<HubFile>) -> HubRepo {
        HubRepo {
            id: id.to_string(),
            refs: HashMap::from([("main".to_string(), C_MAIN.to_string())]),
            commits: HashMap::from([(C_MAIN.to_string(), files)]),
            gated: false,
        }
    }
    fn commit_of(&self, rev: &str) -> Option<String> {
        if self.commits.contains_key(rev) {
            return Some(rev.to_string());
        }
        self.refs.get(rev).cloned()
    }
}

#[derive(Clone, Debug)]
struct Req {
    path: String,
    query: String,
    headers: HashMap<String, String>,
}

impl Req {
    fn range(&self) -> Option<&str> {
        self.headers.get("range").map(String::as_str)
    }
    /// A GET of a file's bytes (not the `bytes=0-0` metadata probe).
    fn is_body_of(&self, file: &str) -> bool {
        self.path.contains("/resolve/")
            && self.path.ends_with(&format!("/{file}"))
            && self.range() != Some("bytes=0-0")
    }
}

#[derive(Default)]
struct HubState {
    repos: HashMap<String, HubRepo>,
    requests: Vec<Req>,
    /// File name → how many more body requests to cut off half way.
    drop_body: HashMap<String, usize>,
    /// Listing size to claim for `model.safetensors`.
    size_override: Option<u64>,
    /// The listing's body never ends (up to [`FLOOD`] bytes, then the
    /// connection closes); `true`: it also announces a Content-Length.
    listing_flood: Option<bool>,
    /// Told the bytes of a flooding listing written before the client hung
    /// up (or the flood ended).
    listing_sent: Option<std::sync::mpsc::Sender<u64>>,
    /// File name → answer its ranges with a Content-Length (and body) this
    /// many bytes short.
    short_body: HashMap<String, usize>,
    /// Files whose ranges come with their last byte flipped (same length).
    corrupt: Vec<String>,
}

/// How much a flooding listing sends at most (far over any cap).
const FLOOD: u64 = 256 << 20;

/// Writes an endless JSON listing until the client hangs up or [`FLOOD`].
fn flood_listing(s: &mut TcpStream, commit: &str, announce: bool) -> u64 {
    let mut head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_string();
    if announce {
        head.push_str(&format!("content-length: {}\r\n", FLOOD * 4));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut sent = 0u64;
    let start = format!(r#"{{"sha":"{commit}","siblings":["#);
    if s.write_all(head.as_bytes()).is_err() || s.write_all(start.as_bytes()).is_err() {
        return 0;
    }
    let piece = r#"{"rfilename":"a-file-name-that-goes-on-and-on.json"},"#.repeat(1000);
    while sent < FLOOD {
        if s.write_all(piece.as_bytes()).is_err() {
            break;
        }
        sent += piece.len() as u64;
    }
    let _ = s.shutdown(Shutdown::Both);
    sent
}

struct FakeHub {
    addr: SocketAddr,
    st: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start(repos: Vec<HubRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let st = Arc::new(Mutex::new(HubState {
            repos: repos.into_iter().map(|r| (r.id.clone(), r)).collect(),
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st2, stop2) = (st.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st2.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        FakeHub {
            addr,
            st,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.st.lock().unwrap().requests.clone()
    }

    fn drop_body(&self, file: &str, times: usize) {
        self.st
            .lock()
            .unwrap()
            .drop_body
            .insert(file.to_string(), times);
    }

    fn file(&self, repo: &str, commit: &str, name: &str) -> HubFile {
        let st = self.st.lock().unwrap();
        st.repos[repo].commits[commit]
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(
    s: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()
}

fn hub_error(s: &mut TcpStream, status: u16, code: &str, msg: &str) -> std::io::Result<()> {
    let body = json!({ "error": msg }).to_string();
    respond(
        s,
        status,
        &[
            ("content-type", "application/json".into()),
            ("x-error-code", code.into()),
            ("x-error-message", msg.into()),
        ],
        body.as_bytes(),
    )
}

fn serve(mut s: TcpStream, st: &Mutex<HubState>) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut it = line.split_whitespace();
    let (method, target) = (
        it.next().unwrap_or("").to_string(),
        it.next().unwrap_or("/"),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let req = Req {
        path: path.to_string(),
        query: query.to_string(),
        headers: headers.clone(),
    };
    let mut g = st.lock().unwrap();
    g.requests.push(req.clone());
    let authed = headers.get("authorization").map(String::as_str);
    let good_token = authed == Some(&format!("Bearer {TOKEN}"));

    if let Some(rest) = path.strip_prefix("/api/models/") {
        // {org}/{name}/revision/{rev}, or {org}/{name}/tree/{rev} (what
        // huggingface_hub's snapshot_download lists).
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let tree = parts.get(2) == Some(&"tree");
        if parts.len() != 4 || !(parts[2] == "revision" || tree) {
            drop(g);
            return hub_error(&mut s, 404, "EntryNotFound", "no such API");
        }
        let id = format!("{}/{}", parts[0], parts[1]);
        let rev = parts[3].replace("%2F", "/");
        let Some(repo) = g.repos.get(&id).cloned() else {
            let status = if authed.is_some() { 404 } else { 401 };
            drop(g);
            return hub_error(&mut s, status, "RepoNotFound", "Repository not found");
        };
        let Some(commit) = repo.commit_of(&rev) else {
            drop(g);
            return hub_error(&mut s, 404, "RevisionNotFound", "Invalid rev id");
        };
        if tree {
            let entries: Vec<Value> = repo.commits[&commit]
                .iter()
                .map(|f| {
                    let mut v = json!({
                        "type": "file",
                        "path": f.name,
                        "size": f.data.len(),
                        "oid": if f.lfs { fake_hash(f.name.as_bytes(), 40) } else { f.etag.clone() },
                    });
                    if f.lfs {
                        v["lfs"] = json!({"oid": f.etag, "size": f.data.len(), "pointerSize": 134});
                    }
                    v
                })
                .collect();
            drop(g);
            return respond(
                &mut s,
                200,
                &[("content-type", "application/json".into())],
                Value::Array(entries).to_string().as_bytes(),
            );
        }
        if let Some(announce) = g.listing_flood {
            let tx = g.listing_sent.clone();
            drop(g);
            let sent = flood_listing(&mut s, &commit, announce);
            if let Some(tx) = tx {
                let _ = tx.send(sent);
            }
            return Ok(());
        }
        let blobs = query.contains("blobs=true");
        let siblings: Vec<Value> = repo.commits[&commit]
            .iter()
            .map(|f| {
                let mut size = f.data.len() as u64;
                if f.name == "model.safetensors" {
                    size = g.size_override.unwrap_or(size);
                }
                let mut v = json!({ "rfilename": f.name });
                if blobs {
                    v["size"] = json!(size);
                    if f.lfs {
                        v["blobId"] = json!(fake_hash(f.name.as_bytes(), 40));
                        v["lfs"] = json!({"sha256": f.etag, "size": size, "pointerSize": 134});
                    } else {
                        v["blobId"] = json!(f.etag);
                    }
                }
                v
            })
            .collect();
        let body = json!({
            "_id": "0000",
            "id": id,
            "modelId": id,
            "sha": commit,
            "private": false,
            "gated": if repo.gated { json!("manual") } else { json!(false) },
            "siblings": siblings,
        })
        .to_string();
        drop(g);
        return respond(
            &mut s,
            200,
            &[("content-type", "application/json".into())],
            body.as_bytes(),
        );
    }

    // /{org}/{name}/resolve/{rev}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        drop(g);
        return hub_error(&mut s, 404, "EntryNotFound", "not found");
    }
    let id = format!("{}/{}", parts[0], parts[1]);
    let rev = parts[3].replace("%2F", "/");
    let Some(repo) = g.repos.get(&id).cloned() else {
        let status = if authed.is_some() { 404 } else { 401 };
        drop(g);
        return hub_error(&mut s, status, "RepoNotFound", "Repository not found");
    };
    if repo.gated && !good_token {
        drop(g);
        return if authed.is_none() {
            hub_error(
                &mut s,
                401,
                "GatedRepo",
                "Access to model is restricted. Please log in.",
            )
        } else {
            hub_error(
                &mut s,
                403,
                "GatedRepo",
                "Access to model is restricted and you are not in the authorized list.",
            )
        };
    }
    let Some(commit) = repo.commit_of(&rev) else {
        drop(g);
        return hub_error(&mut s, 404, "RevisionNotFound", "Invalid rev id");
    };
    let Some(file) = repo.commits[&commit]
        .iter()
        .find(|f| f.name == parts[4])
        .cloned()
    else {
        drop(g);
        return hub_error(&mut s, 404, "EntryNotFound", "Entry not found");
    };
    let len = file.data.len() as u64;
    let mut hdrs: Vec<(&str, String)> = vec![
        ("x-repo-commit", commit.clone()),
        ("etag", format!("\"{}\"", file.etag)),
        ("accept-ranges", "bytes".into()),
        ("content-type", "application/octet-stream".into()),
    ];
    if file.lfs {
        hdrs.push(("x-linked-etag", format!("\"{}\"", file.etag)));
        hdrs.push(("x-linked-size", len.to_string()));
    }
    let range = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let a: u64 = a.parse().unwrap_or(0);
            let b: u64 = b.parse().unwrap_or(u64::MAX);
            (a, b.min(len.saturating_sub(1)))
        });
    let cut = range != Some((0, 0))
        && match g.drop_body.get_mut(&file.name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
    let is_body = range != Some((0, 0));
    let short = g.short_body.get(&file.name).copied().filter(|_| is_body);
    let corrupt = is_body && g.corrupt.contains(&file.name);
    drop(g);
    if method == "HEAD" {
        // huggingface_hub's metadata call: headers only.
        let mut head = "HTTP/1.1 200 OK\r\n".to_string();
        for (k, v) in &hdrs {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "content-length: {len}\r\nconnection: close\r\n\r\n"
        ));
        return s.write_all(head.as_bytes());
    }
    let (status, body) = match range {
        Some((a, _)) if a >= len => return respond(&mut s, 416, &hdrs, b""),
        Some((a, b)) => {
            hdrs.push(("content-range", format!("bytes {a}-{b}/{len}")));
            (206, &file.data[a as usize..=b as usize])
        }
        None => (200, &file.data[..]),
    };
    if let Some(n) = short {
        // A Content-Length (and body) `n` bytes short, Content-Range whole.
        return respond(&mut s, status, &hdrs, &body[..body.len().saturating_sub(n)]);
    }
    if corrupt {
        let mut b = body.to_vec();
        if let Some(x) = b.last_mut() {
            *x ^= 0xff;
        }
        return respond(&mut s, status, &hdrs, &b);
    }
    if cut {
        // Promise the whole body, send half, hang up.
        let mut head = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in &hdrs {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes())?;
        s.write_all(&body[..body.len() / 2])?;
        s.flush()?;
        return s.shutdown(Shutdown::Both);
    }
    respond(&mut s, status, &hdrs, body)
}

// --------------------------------------------------------------- helpers

/// A scratch directory (canonical path first), removed when dropped.
struct Tmp(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let d = tempfile::Builder::new()
            .prefix(&format!("vss-hf-it-{tag}-"))
            .tempdir()
            .unwrap();
        Tmp(d.path().canonicalize().unwrap(), d)
    }
}

/// The tiny checkpoint's files (what a `hf download` would fetch).
fn tiny_files() -> Vec<HubFile> {
    let mut v: Vec<HubFile> = std::fs::read_dir(TINY)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "config.v5.json")
        .map(|n| HubFile::new(&n, std::fs::read(Path::new(TINY).join(&n)).unwrap()))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Files a checkpoint does not need, which must not be fetched.
fn junk() -> Vec<HubFile> {
    vec![
        HubFile::new(".gitattributes", b"*.safetensors filter=lfs\n".to_vec()),
        HubFile::new("README.md", b"# tiny\n".to_vec()),
        HubFile::new("pytorch_model.bin", vec![1u8; 4096]),
        HubFile::new("original/consolidated.00.pth", vec![2u8; 4096]),
    ]
}

fn tiny_repo(id: &str) -> HubRepo {
    let mut files = tiny_files();
    files.extend(junk());
    let mut repo = HubRepo::new(id, files);
    // `v1`: another commit, whose config.json differs.
    let mut v1 = tiny_files();
    for f in &mut v1 {
        if f.name == "config.json" {
            let mut cfg: Value = serde_json::from_slice(&f.data).unwrap();
            cfg["vss_test_rev"] = json!("v1");
            *f = HubFile::new("config.json", cfg.to_string().into_bytes());
        }
    }
    repo.commits.insert(C_V1.to_string(), v1);
    repo.refs.insert("v1".into(), C_V1.into());
    repo
}

fn env(endpoint: &str, hf_home: &Path, extra: &[(&str, &str)]) -> DownloadEnv {
    let mut vars = HashMap::from([
        ("HF_ENDPOINT".to_string(), endpoint.to_string()),
        ("HF_HOME".to_string(), hf_home.display().to_string()),
    ]);
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    DownloadEnv {
        vars,
        model_root_dir: None,
    }
}

fn spec(s: &str) -> HfSpec {
    hf::parse(s).unwrap()
}

fn fetch(s: &str, env: &DownloadEnv) -> Result<PathBuf, String> {
    hf::fetch(&spec(s), env, &|_: &Progress| {}).map_err(|e| e.to_string())
}

fn repo_dir(hf_home: &Path, id: &str) -> PathBuf {
    hf_home
        .join("hub")
        .join(format!("models--{}", id.replace('/', "--")))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `tests/qwen/tiny`'s files equal those of `dir`.
fn assert_same_as_tiny(dir: &Path) {
    for f in tiny_files() {
        let got = std::fs::read(dir.join(&f.name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(&f.name).display()));
        assert!(got == *f.data, "{} differs from the source", f.name);
    }
}

/// A safetensors file with one U8 tensor of `n` bytes.
fn safetensors_bytes(n: usize) -> Vec<u8> {
    let h = format!(r#"{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend(h.as_bytes());
    v.extend((0..n).map(|i| (i % 251) as u8));
    v
}

// ----------------------------------------------------------------- tests

#[test]
fn fresh_download_lands_in_the_standard_layout() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("fresh");
    let home = t.0.join("hf");
    let e = env(&hub.endpoint(), &home, &[]);
    let source = download::parse_model_path("hf:test/tiny").unwrap();
    assert!(matches!(source, ModelSource::Hf(_)));
    let dir = download::resolve(&source, &e, &|_: &Progress| {}).unwrap();

    let rd = repo_dir(&home, "test/tiny");
    assert_eq!(dir, rd.join("snapshots").join(C_MAIN));
    assert_same_as_tiny(&dir);
    let mut expected: Vec<String> = tiny_files().into_iter().map(|f| f.name).collect();
    expected.sort();
    assert_eq!(names_in(&dir), expected, "only the checkpoint's files");
    for f in tiny_files() {
        let link = dir.join(&f.name);
        assert!(link.symlink_metadata().unwrap().is_symlink(), "{}", f.name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../blobs").join(&f.etag),
            "{}",
            f.name
        );
        assert!(rd.join("blobs").join(&f.etag).is_file());
    }
    assert_eq!(
        std::fs::read_to_string(rd.join("refs").join("main")).unwrap(),
        C_MAIN
    );
    assert_eq!(names_in(&rd.join("refs")), vec!["main".to_string()]);
    assert!(
        !names_in(&rd.join("blobs"))
            .iter()
            .any(|n| n.ends_with(".sync.part")),
        "no partial blob left"
    );

    let reqs = hub.requests();
    let listing: Vec<&Req> = reqs
        .iter()
        .filter(|r| r.path == "/api/models/test/tiny/revision/main")
        .collect();
    assert_eq!(listing.len(), 1, "{reqs:#?}");
    assert!(listing[0].query.contains("blobs=true"));
    for j in junk() {
        assert!(
            !reqs.iter().any(|r| r.path.ends_with(&j.name)),
            "{} must not be fetched",
            j.name
        );
    }
    for f in tiny_files() {
        assert!(
            reqs.iter().any(
                |r| r.path == format!("/test/tiny/resolve/{C_MAIN}/{}", f.name)
                    && r.range() == Some("bytes=0-0")
            ),
            "metadata probe for {}",
            f.name
        );
    }
}

#[test]
fn second_fetch_makes_no_request() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("second");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let first = fetch("test/tiny", &e).unwrap();
    let n = hub.requests().len();
    let again = fetch("test/tiny", &e).unwrap();
    assert_eq!(first, again);
    assert_eq!(hub.requests().len(), n, "the second fetch used the network");
    // No Hub at all: still found.
    let endpoint = hub.endpoint();
    drop(hub);
    assert_eq!(
        fetch("test/tiny", &env(&endpoint, &t.0, &[])).unwrap(),
        first
    );
    // HF_HUB_OFFLINE with the model present.
    let off = env(&endpoint, &t.0, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(fetch("test/tiny", &off).unwrap(), first);
}

/// Lays out `files` as `hf download` does: blobs, relative symlinks, ref.
fn populate_like_hf_download(
    home: &Path,
    id: &str,
    revision: &str,
    commit: &str,
    files: &[HubFile],
) -> PathBuf {
    let rd = repo_dir(home, id);
    let snap = rd.join("snapshots").join(commit);
    std::fs::create_dir_all(rd.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(rd.join("refs")).unwrap();
    for f in files {
        std::fs::write(rd.join("blobs").join(&f.etag), &*f.data).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(&f.etag), snap.join(&f.name))
            .unwrap();
    }
    std::fs::write(rd.join("refs").join(revision), commit).unwrap();
    std::fs::create_dir_all(
        home.join("hub/.locks")
            .join(format!("models--{}", id.replace('/', "--"))),
    )
    .unwrap();
    snap
}

#[test]
fn cache_left_by_hf_download_is_reused() {
    let hub = FakeHub::start(vec![]);
    let t = Tmp::new("prepop");
    let home = t.0.join("hf");
    let snap = populate_like_hf_download(&home, "org/model", "main", C_MAIN, &tiny_files());
    let e = env(&hub.endpoint(), &home, &[]);
    assert_eq!(fetch("org/model", &e).unwrap(), snap);
    // By full commit hash, no ref needed.
    assert_eq!(fetch(&format!("org/model@{C_MAIN}"), &e).unwrap(), snap);
    assert!(hub.requests().is_empty(), "{:#?}", hub.requests());
    // HF_HUB_CACHE instead of HF_HOME/hub, as huggingface_hub honours it.
    let e2 = env(
        &hub.endpoint(),
        &t.0.join("other"),
        &[("HF_HUB_CACHE", &home.join("hub").display().to_string())],
    );
    assert_eq!(fetch("org/model", &e2).unwrap(), snap);
    assert!(hub.requests().is_empty());
}

#[test]
fn truncated_cached_blob_is_fetched_again() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("trunc");
    let snap = populate_like_hf_download(&t.0, "test/tiny", "main", C_MAIN, &tiny_files());
    let st = hub.file("test/tiny", C_MAIN, "model.safetensors");
    let blob = repo_dir(&t.0, "test/tiny").join("blobs").join(&st.etag);
    std::fs::write(&blob, &st.data[..st.data.len() - 100]).unwrap();
    let e = env(&hub.endpoint(), &t.0, &[]);
    assert_eq!(fetch("test/tiny", &e).unwrap(), snap);
    assert_same_as_tiny(&snap);
    let reqs = hub.requests();
    assert!(reqs.iter().any(|r| r.is_body_of("model.safetensors")));
    // The intact files were not fetched again.
    assert!(
        !reqs.iter().any(|r| r.path.ends_with("/tokenizer.json")),
        "{reqs:#?}"
    );
}

#[test]
fn revision_maps_to_its_commit() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("rev");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let rd = repo_dir(&t.0, "test/tiny");
    let v1 = fetch("test/tiny@v1", &e).unwrap();
    assert_eq!(v1, rd.join("snapshots").join(C_V1));
    assert_eq!(
        std::fs::read_to_string(rd.join("refs").join("v1")).unwrap(),
        C_V1
    );
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(v1.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["vss_test_rev"], "v1");
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == "/api/models/test/tiny/revision/v1"));
    assert!(
        hub.requests()
            .iter()
            .all(|r| !r.path.contains("/resolve/v1/")),
        "files are fetched by commit"
    );

    // main shares the weights' blob: linked, not downloaded again.
    let main = fetch("test/tiny", &e).unwrap();
    assert_eq!(main, rd.join("snapshots").join(C_MAIN));
    assert_same_as_tiny(&main);
    assert!(!hub
        .requests()
        .iter()
        .any(|r| r.path == format!("/test/tiny/resolve/{C_MAIN}/model.safetensors")));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(main.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("vss_test_rev").is_none());
    let mut refs = names_in(&rd.join("refs"));
    refs.sort();
    assert_eq!(refs, vec!["main".to_string(), "v1".to_string()]);
    // Both now come from the cache.
    let n = hub.requests().len();
    assert_eq!(fetch("test/tiny@v1", &e).unwrap(), v1);
    assert_eq!(hub.requests().len(), n);
}

fn gated_repo() -> HubRepo {
    let mut r = HubRepo::new("test/gated", tiny_files());
    r.gated = true;
    r
}

#[test]
fn token_is_sent_as_bearer_and_never_shown() {
    let hub = FakeHub::start(vec![gated_repo()]);
    let t = Tmp::new("token");
    let e = env(&hub.endpoint(), &t.0.join("a"), &[("HF_TOKEN", TOKEN)]);
    let dir = fetch("test/gated", &e).unwrap();
    assert_same_as_tiny(&dir);
    let reqs = hub.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.path
        );
    }

    // A wrong token: refused, named by variable, never shown.
    let wrong = "hf_WrongSecretToken987654321";
    let e = env(&hub.endpoint(), &t.0.join("b"), &[("HF_TOKEN", wrong)]);
    let err = fetch("test/gated", &e).unwrap_err();
    assert!(!err.contains(wrong), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    assert!(err.contains("gated") && err.contains("HF_TOKEN"), "{err}");
    assert!(err.contains("licence"), "{err}");
    assert!(
        err.contains(&format!("{}/test/gated", hub.endpoint())),
        "{err}"
    );

    // The token file `hf auth login` writes, when HF_TOKEN is unset.
    let home = t.0.join("c");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let dir = fetch("test/gated", &env(&hub.endpoint(), &home, &[])).unwrap();
    assert_same_as_tiny(&dir);
}

#[test]
fn gated_repo_without_token_says_set_hf_token() {
    let hub = FakeHub::start(vec![gated_repo()]);
    let t = Tmp::new("gated401");
    let err = fetch("test/gated", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("set HF_TOKEN"), "{err}");
    assert!(err.contains("accept its licence"), "{err}");
}

#[test]
fn unknown_repo_and_revision_say_not_found() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("404");
    // No token: the Hub answers 401 RepoNotFound.
    let err = fetch("test/nope", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(
        err.contains("'test/nope' not found") && err.contains("HTTP 401"),
        "{err}"
    );
    assert!(err.contains("HF_TOKEN"), "{err}");
    // With a token: 404 RepoNotFound.
    let err = fetch(
        "test/nope",
        &env(&hub.endpoint(), &t.0, &[("HF_TOKEN", TOKEN)]),
    )
    .unwrap_err();
    assert!(
        err.contains("'test/nope' not found") && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
    // Revision.
    let err = fetch("test/tiny@nope", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(err.contains("revision 'nope' not found"), "{err}");
    assert!(err.contains("hf:ORG/NAME[@REVISION]"), "{err}");
}

#[test]
fn interrupted_download_is_resumed_by_the_next_fetch() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("interrupt");
    let e = env(&hub.endpoint(), &t.0, &[]);
    hub.drop_body("model.safetensors", 100);
    let err = fetch("test/tiny", &e).unwrap_err();
    assert!(
        err.contains("interrupted") && err.contains("run again"),
        "{err}"
    );
    let tries = hub
        .requests()
        .iter()
        .filter(|r| r.is_body_of("model.safetensors"))
        .count();
    assert_eq!(tries, 3, "tried three times");
    let rd = repo_dir(&t.0, "test/tiny");
    assert!(
        names_in(&rd.join("blobs"))
            .iter()
            .any(|n| n.ends_with(".sync.part")),
        "the partial blob is kept: {:?}",
        names_in(&rd.join("blobs"))
    );
    assert!(!rd
        .join("snapshots")
        .join(C_MAIN)
        .join("model.safetensors")
        .exists());

    hub.drop_body("model.safetensors", 0);
    let dir = fetch("test/tiny", &e).unwrap();
    assert_same_as_tiny(&dir);
    assert!(!names_in(&rd.join("blobs"))
        .iter()
        .any(|n| n.ends_with(".sync.part")));

    // One drop only: the retry inside the same fetch recovers.
    let t2 = Tmp::new("interrupt-once");
    hub.drop_body("model.safetensors", 1);
    let dir = fetch("test/tiny", &env(&hub.endpoint(), &t2.0, &[])).unwrap();
    assert_same_as_tiny(&dir);
}

#[test]
fn partial_blob_resumes_from_its_committed_length() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("resume");
    let st = hub.file("test/tiny", C_MAIN, "model.safetensors");
    let rd = repo_dir(&t.0, "test/tiny");
    std::fs::create_dir_all(rd.join("blobs")).unwrap();
    // hf-hub's partial file: the data so far, room for the rest, then the
    // committed length (u64 LE).
    let len = st.data.len();
    let half = len / 2;
    let mut part = st.data[..half].to_vec();
    part.resize(len, 0);
    part.extend((half as u64).to_le_bytes());
    std::fs::write(
        rd.join("blobs").join(format!("{}.sync.part", st.etag)),
        part,
    )
    .unwrap();
    // A Python-style leftover is not trusted: downloaded again.
    let tk = hub.file("test/tiny", C_MAIN, "tokenizer.json");
    std::fs::write(
        rd.join("blobs").join(format!("{}.incomplete", tk.etag)),
        &tk.data[..10],
    )
    .unwrap();

    let dir = fetch("test/tiny", &env(&hub.endpoint(), &t.0, &[])).unwrap();
    assert_same_as_tiny(&dir);
    let bodies: Vec<String> = hub
        .requests()
        .iter()
        .filter(|r| r.is_body_of("model.safetensors"))
        .map(|r| r.range().unwrap_or("").to_string())
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(
        bodies[0].starts_with(&format!("bytes={half}-")),
        "{bodies:?}"
    );
}

#[test]
fn progress_reports_increasing_bytes() {
    let big = safetensors_bytes(6 << 20);
    let tiny = Path::new(TINY);
    let files = vec![
        HubFile::new(
            "config.json",
            std::fs::read(tiny.join("config.json")).unwrap(),
        ),
        HubFile::new(
            "tokenizer.json",
            std::fs::read(tiny.join("tokenizer.json")).unwrap(),
        ),
        HubFile::new("model.safetensors", big.clone()),
    ];
    let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
    let hub = FakeHub::start(vec![HubRepo::new("test/big", files)]);
    let t = Tmp::new("progress");
    let reports = Mutex::new(Vec::<Progress>::new());
    let cb = |p: &Progress| reports.lock().unwrap().push(p.clone());
    let dir = hf::fetch(&spec("test/big"), &env(&hub.endpoint(), &t.0, &[]), &cb).unwrap();
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), big);
    let reports = reports.into_inner().unwrap();
    assert!(!reports.is_empty());
    for w in reports.windows(2) {
        assert!(w[1].all_done >= w[0].all_done, "{w:?}");
    }
    let last = reports.last().unwrap();
    assert_eq!(last.all_done, total);
    assert_eq!(last.all_total, Some(total));
    let st: Vec<&Progress> = reports
        .iter()
        .filter(|p| p.file == "model.safetensors")
        .collect();
    assert!(st.len() >= 3, "reports during the 6 MiB file: {st:?}");
    for w in st.windows(2) {
        assert!(w[1].done > w[0].done, "{w:?}");
        assert!(
            w[1].done - w[0].done <= (2 << 20) + (1 << 20),
            "a report every ~2 MiB: {w:?}"
        );
    }
    assert_eq!(st.last().unwrap().done, big.len() as u64);
    assert!(st.iter().all(|p| p.total == Some(big.len() as u64)));
    for f in ["config.json", "tokenizer.json"] {
        assert!(
            reports
                .iter()
                .any(|p| p.file == f && p.total == Some(p.done)),
            "end of {f}"
        );
    }
}

#[test]
fn model_root_dir_placement() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("root");
    let root = t.0.join("models");
    std::fs::create_dir_all(&root).unwrap();
    // HF_HOME outside the root: the download goes under the root.
    let outside = t.0.join("outside");
    let mut e = env(&hub.endpoint(), &outside, &[]);
    e.model_root_dir = Some(root.clone());
    let dir = fetch("test/tiny", &e).unwrap();
    assert_eq!(
        dir,
        root.join("huggingface/hub/models--test--tiny/snapshots")
            .join(C_MAIN)
    );
    assert!(dir.canonicalize().unwrap().starts_with(&root));
    assert_same_as_tiny(&dir);
    assert!(!outside.join("hub").exists());
    // HF_HOME inside the root: used as it is.
    let inside = root.join("hf-home");
    let mut e = env(&hub.endpoint(), &inside, &[]);
    e.model_root_dir = Some(root.clone());
    let dir = fetch("test/tiny", &e).unwrap();
    assert_eq!(
        dir,
        repo_dir(&inside, "test/tiny")
            .join("snapshots")
            .join(C_MAIN)
    );
    // A missing root is an error that names it.
    let mut e = env(&hub.endpoint(), &inside, &[]);
    e.model_root_dir = Some(t.0.join("missing"));
    assert!(fetch("test/tiny", &e)
        .unwrap_err()
        .contains("model-root-dir"));
}

#[test]
fn repo_without_safetensors_is_refused() {
    let tiny = Path::new(TINY);
    let files = vec![
        HubFile::new(
            "config.json",
            std::fs::read(tiny.join("config.json")).unwrap(),
        ),
        HubFile::new(
            "tokenizer.json",
            std::fs::read(tiny.join("tokenizer.json")).unwrap(),
        ),
        HubFile::new("pytorch_model.bin", vec![0u8; 1000]),
    ];
    let hub = FakeHub::start(vec![HubRepo::new("test/bin", files)]);
    let t = Tmp::new("bin");
    let err = fetch("test/bin", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(
        err.contains("no safetensors") && err.contains("pytorch_model.bin"),
        "{err}"
    );
    assert!(!hub.requests().iter().any(|r| r.path.contains("/resolve/")));
}

#[test]
fn unreachable_endpoint_names_hf_endpoint() {
    let closed = ClosedPort::new();
    let port = closed.port();
    let t = Tmp::new("unreachable");
    let err = fetch(
        "test/tiny",
        &env(
            &format!("http://127.0.0.1:{port}"),
            &t.0,
            &[("HF_TOKEN", TOKEN)],
        ),
    )
    .unwrap_err();
    assert!(
        err.contains("cannot reach") && err.contains("HF_ENDPOINT"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
    // Offline mode never tries.
    let err = fetch(
        "test/tiny",
        &env(
            &format!("http://127.0.0.1:{port}"),
            &t.0,
            &[("HF_HUB_OFFLINE", "1")],
        ),
    )
    .unwrap_err();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn unwritable_cache_is_named() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("unwritable");
    let file = t.0.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let home = file.join("hf");
    let err = fetch("test/tiny", &env(&hub.endpoint(), &home, &[])).unwrap_err();
    assert!(err.contains("not writable"), "{err}");
    assert!(
        err.contains(&home.join("hub").display().to_string()),
        "{err}"
    );
    assert!(err.contains("HF_HOME"), "{err}");
}

#[test]
fn disk_full_names_the_cache_and_the_bytes() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    hub.st.lock().unwrap().size_override = Some(1 << 60);
    let t = Tmp::new("full");
    let err = fetch("test/tiny", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(err.contains("not enough disk space"), "{err}");
    assert!(
        err.contains(&t.0.join("hub").display().to_string()),
        "{err}"
    );
    let others: u64 = tiny_files()
        .iter()
        .filter(|f| f.name != "model.safetensors")
        .map(|f| f.data.len() as u64)
        .sum();
    assert!(
        err.contains(&format!("{} bytes", (1u64 << 60) + others)),
        "{err}"
    );
    assert!(!hub
        .requests()
        .iter()
        .any(|r| r.is_body_of("model.safetensors")));
}

#[test]
fn sharded_checkpoint_takes_the_shards_its_index_names() {
    let tiny = Path::new(TINY);
    let a = safetensors_bytes(3000);
    let b = safetensors_bytes(5000);
    let index = json!({
        "metadata": {"total_size": 8000},
        "weight_map": {
            "x.weight": "model-00001-of-00002.safetensors",
            "y.weight": "model-00002-of-00002.safetensors",
            "z.weight": "model-00002-of-00002.safetensors",
        }
    });
    let files = vec![
        HubFile::new(
            "config.json",
            std::fs::read(tiny.join("config.json")).unwrap(),
        ),
        HubFile::new(
            "tokenizer.json",
            std::fs::read(tiny.join("tokenizer.json")).unwrap(),
        ),
        HubFile::new("hf_quant_config.json", b"{}".to_vec()),
        HubFile::new(
            "model.safetensors.index.json",
            index.to_string().into_bytes(),
        ),
        HubFile::new("model-00001-of-00002.safetensors", a.clone()),
        HubFile::new("model-00002-of-00002.safetensors", b.clone()),
        HubFile::new("consolidated.safetensors", safetensors_bytes(100)),
        HubFile::new("original/model.safetensors", safetensors_bytes(100)),
    ];
    let hub = FakeHub::start(vec![HubRepo::new("test/sharded", files)]);
    let t = Tmp::new("sharded");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let dir = fetch("test/sharded", &e).unwrap();
    assert_eq!(
        names_in(&dir),
        vec![
            "config.json",
            "hf_quant_config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
        ]
    );
    assert_eq!(
        std::fs::read(dir.join("model-00001-of-00002.safetensors")).unwrap(),
        a
    );
    assert_eq!(
        std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(),
        b
    );
    assert!(!hub
        .requests()
        .iter()
        .any(|r| r.path.contains("consolidated") || r.path.contains("/original/")));
    // A missing shard makes the cached snapshot incomplete. Its blob is
    // still there: linked again, not downloaded.
    let shard2 = dir.join("model-00002-of-00002.safetensors");
    let blob = dir.join(std::fs::read_link(&shard2).unwrap());
    std::fs::remove_file(&shard2).unwrap();
    let n = hub.requests().len();
    assert_eq!(fetch("test/sharded", &e).unwrap(), dir);
    let new = hub.requests()[n..].to_vec();
    assert!(new
        .iter()
        .any(|r| r.path.starts_with("/api/models/test/sharded/")));
    assert!(
        !new.iter().any(|r| r.path.contains("/resolve/")),
        "{new:#?}"
    );
    assert_eq!(std::fs::read(&shard2).unwrap(), b);
    // Blob gone too: downloaded.
    std::fs::remove_file(&shard2).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let n = hub.requests().len();
    assert_eq!(fetch("test/sharded", &e).unwrap(), dir);
    assert!(hub.requests()[n..]
        .iter()
        .any(|r| r.is_body_of("model-00002-of-00002.safetensors")));
    assert_eq!(std::fs::read(&shard2).unwrap(), b);
}

/// A Python with `huggingface_hub`, for the cross-check with `hf download`
/// (VSS_TEST_HF_PYTHON, else VSS_TEST_PYTHON, else /usr/bin/python3).
fn hf_python() -> Option<String> {
    let p = std::env::var("VSS_TEST_HF_PYTHON")
        .or_else(|_| std::env::var("VSS_TEST_PYTHON"))
        .unwrap_or_else(|_| "/usr/bin/python3".into());
    let ok = std::process::Command::new(&p)
        .args(["-c", "import huggingface_hub"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(p);
    }
    let why = format!("SKIPPED: {p} has no huggingface_hub (set VSS_TEST_HF_PYTHON)");
    if std::env::var("VSS_TEST_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{why}; VSS_TEST_REQUIRE_PYTHON=1 forbids skipping");
    }
    eprintln!("{why}");
    None
}

fn python(py: &str, vars: &[(&str, String)], code: &str) -> String {
    let mut c = std::process::Command::new(py);
    c.args(["-c", code]);
    for k in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
    ] {
        c.env_remove(k);
    }
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Our cache is what huggingface_hub reads, and the other way round.
#[test]
fn huggingface_hub_and_this_share_the_cache() {
    let Some(py) = hf_python() else { return };
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("python");
    // Ours, then huggingface_hub offline.
    let a = t.0.join("a");
    let ours = fetch("test/tiny", &env(&hub.endpoint(), &a, &[])).unwrap();
    let seen = python(
        &py,
        &[
            ("HF_HOME", a.display().to_string()),
            ("HF_HUB_OFFLINE", "1".into()),
        ],
        "from huggingface_hub import snapshot_download, scan_cache_dir\n\
         p = snapshot_download('test/tiny')\n\
         assert not scan_cache_dir().warnings, scan_cache_dir().warnings\n\
         print(p)",
    );
    assert_eq!(PathBuf::from(seen), ours);
    // huggingface_hub's (from the fake Hub), then ours with no Hub.
    let b = t.0.join("b");
    let names: Vec<String> = tiny_files().into_iter().map(|f| f.name).collect();
    let theirs = python(
        &py,
        &[
            ("HF_HOME", b.display().to_string()),
            ("HF_ENDPOINT", hub.endpoint()),
            ("HF_HUB_DISABLE_XET", "1".into()),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1".into()),
        ],
        &format!(
            "from huggingface_hub import snapshot_download\nprint(snapshot_download('test/tiny', allow_patterns={names:?}))"
        ),
    );
    let endpoint = hub.endpoint();
    drop(hub);
    let got = fetch("test/tiny", &env(&endpoint, &b, &[])).unwrap();
    assert_eq!(got, PathBuf::from(theirs));
    assert_same_as_tiny(&got);
}

// ------------------------------------------- hardening round 3 (F2, F6)

fn blob_names(rd: &Path) -> Vec<String> {
    names_in(&rd.join("blobs"))
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

/// F2: a listing whose body never ends is cut at the cap, at once (not at
/// the 60 s timeout) and without holding more than the cap.
#[test]
fn endless_listing_stops_at_the_cap() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("flood");
    let e = env(&hub.endpoint(), &t.0, &[("HF_TOKEN", TOKEN)]);
    for announce in [false, true] {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut g = hub.st.lock().unwrap();
            g.listing_flood = Some(announce);
            g.listing_sent = Some(tx);
        }
        let err = fetch("test/tiny", &e).unwrap_err();
        assert!(
            err.contains("file list") && err.contains("over the 16777216 bytes (16 MiB)"),
            "{err}"
        );
        assert!(
            err.contains("/api/models/test/tiny/revision/main"),
            "names the URL path: {err}"
        );
        assert!(err.contains("HF_ENDPOINT"), "{err}");
        assert!(!err.contains(TOKEN), "{err}");
        // The client hung up near the cap (socket buffers aside), not after
        // reading the whole flood.
        // (A generous did-not-hang bound: the fake ends when the client
        // hangs up, or after FLOOD bytes.)
        let sent = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .unwrap();
        assert!(
            sent < 64 << 20,
            "{sent} bytes were read (announce {announce})"
        );
        assert!(!hub.requests().iter().any(|r| r.path.contains("/resolve/")));
    }
}

/// F6: a range answered with a Content-Length 100 bytes short is an error;
/// nothing enters the cache as complete, and the next fetch downloads it.
#[test]
fn short_weights_answer_is_not_cached() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("short");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let st = hub.file("test/tiny", C_MAIN, "model.safetensors");
    hub.st
        .lock()
        .unwrap()
        .short_body
        .insert("model.safetensors".into(), 100);
    let err = fetch("test/tiny", &e).unwrap_err();
    assert!(
        err.contains("model.safetensors") && err.contains("sent") && err.contains("run again"),
        "{err}"
    );
    let rd = repo_dir(&t.0, "test/tiny");
    let snap = rd.join("snapshots").join(C_MAIN);
    assert!(snap.join("model.safetensors").symlink_metadata().is_err());
    assert!(!rd.join("blobs").join(&st.etag).exists());
    assert!(!rd.join("refs").join("main").exists());
    // Offline, the cache holds no complete model.
    let off = env(&hub.endpoint(), &t.0, &[("HF_HUB_OFFLINE", "1")]);
    assert!(fetch("test/tiny", &off)
        .unwrap_err()
        .contains("HF_HUB_OFFLINE"));

    hub.st.lock().unwrap().short_body.clear();
    let n = hub.requests().len();
    let dir = fetch("test/tiny", &e).unwrap();
    assert_same_as_tiny(&dir);
    assert!(hub.requests()[n..]
        .iter()
        .any(|r| r.is_body_of("model.safetensors")));
}

/// F6: a file whose bytes do not match the Hub's sha256 is deleted, never
/// linked.
#[test]
fn wrong_sha256_is_not_cached() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("sha");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let st = hub.file("test/tiny", C_MAIN, "model.safetensors");
    hub.st
        .lock()
        .unwrap()
        .corrupt
        .push("model.safetensors".into());
    let err = fetch("test/tiny", &e).unwrap_err();
    assert!(
        err.contains("corrupt") && err.contains(&st.etag) && err.contains("run again"),
        "{err}"
    );
    let rd = repo_dir(&t.0, "test/tiny");
    assert!(rd
        .join("snapshots")
        .join(C_MAIN)
        .join("model.safetensors")
        .symlink_metadata()
        .is_err());
    let blobs = blob_names(&rd);
    assert!(
        !blobs.iter().any(|b| b.starts_with(&st.etag)),
        "no blob nor partial blob of the weights: {blobs:?}"
    );

    hub.st.lock().unwrap().corrupt.clear();
    assert_same_as_tiny(&fetch("test/tiny", &e).unwrap());
}

/// F6: a cached snapshot whose weights blob does not hold its sha256 (the
/// zeros the old download left) is not trusted: fetched again, once.
#[test]
fn unverified_cached_blob_is_checked() {
    let hub = FakeHub::start(vec![tiny_repo("test/tiny")]);
    let t = Tmp::new("unverified");
    let snap = populate_like_hf_download(&t.0, "test/tiny", "main", C_MAIN, &tiny_files());
    let st = hub.file("test/tiny", C_MAIN, "model.safetensors");
    let blob = repo_dir(&t.0, "test/tiny").join("blobs").join(&st.etag);
    let mut zeros = st.data.to_vec();
    let n = zeros.len();
    zeros[n - 100..].fill(0);
    std::fs::write(&blob, &zeros).unwrap();
    let e = env(&hub.endpoint(), &t.0, &[]);
    assert_eq!(fetch("test/tiny", &e).unwrap(), snap);
    assert_same_as_tiny(&snap);
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.is_body_of("model.safetensors")));
    // Checked once: the next fetch needs no request.
    let n = hub.requests().len();
    assert_eq!(fetch("test/tiny", &e).unwrap(), snap);
    assert_eq!(hub.requests().len(), n);
}

// ------------------------------------------------- Cosmos3 split layout

const TINY_COSMOS3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/qwen3/tiny-cosmos3");

/// `tests/qwen3/tiny-cosmos3`'s files, with their paths in the repo
/// (`transformer/…`, `vision_encoder/…`).
fn cosmos3_files() -> Vec<HubFile> {
    let root = Path::new(TINY_COSMOS3);
    let mut v = Vec::new();
    for sub in ["", "transformer", "vision_encoder"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            let e = e.unwrap();
            if !e.file_type().unwrap().is_file() {
                continue;
            }
            let n = e.file_name().into_string().unwrap();
            let name = if sub.is_empty() {
                n
            } else {
                format!("{sub}/{n}")
            };
            v.push(HubFile::new(&name, std::fs::read(e.path()).unwrap()));
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Folders of a Cosmos3 repo that only generation uses: never fetched.
fn cosmos3_decoys() -> Vec<HubFile> {
    vec![
        HubFile::new("vae/config.json", b"{}".to_vec()),
        HubFile::new(
            "vae/diffusion_pytorch_model.safetensors",
            safetensors_bytes(4096),
        ),
        HubFile::new("sound_tokenizer/model.safetensors", safetensors_bytes(512)),
        HubFile::new("scheduler/scheduler_config.json", b"{}".to_vec()),
        HubFile::new("README.md", b"# tiny cosmos3\n".to_vec()),
    ]
}

/// The files of `cosmos3_files` that are taken (all but model_index.json,
/// which no loader reads).
fn cosmos3_taken() -> Vec<HubFile> {
    cosmos3_files()
        .into_iter()
        .filter(|f| f.name != "model_index.json")
        .collect()
}

/// Every file under `dir`, as paths relative to it (links not followed
/// into folders: a snapshot's files are links to blobs).
fn tree_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for n in names_in(dir) {
        let p = dir.join(&n);
        if p.symlink_metadata().unwrap().is_dir() {
            out.extend(tree_in(&p).into_iter().map(|m| format!("{n}/{m}")));
        } else {
            out.push(n);
        }
    }
    out.sort();
    out
}

#[test]
fn cosmos3_layout_downloads_loads_and_is_reused() {
    let mut files = cosmos3_files();
    files.extend(cosmos3_decoys());
    let hub = FakeHub::start(vec![HubRepo::new("test/cosmos3", files)]);
    let t = Tmp::new("cosmos3");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let dir = fetch("test/cosmos3", &e).unwrap();
    let rd = repo_dir(&t.0, "test/cosmos3");
    assert_eq!(dir, rd.join("snapshots").join(C_MAIN));

    // Exactly the taken files, at their paths, linked as huggingface_hub
    // links nested files.
    let mut expected: Vec<String> = cosmos3_taken().into_iter().map(|f| f.name).collect();
    expected.sort();
    assert_eq!(tree_in(&dir), expected);
    for f in cosmos3_taken() {
        let link = dir.join(&f.name);
        let depth = f.name.matches('/').count();
        let mut want = PathBuf::new();
        for _ in 0..depth + 2 {
            want.push("..");
        }
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            want.join("blobs").join(&f.etag),
            "{}",
            f.name
        );
        assert!(std::fs::read(&link).unwrap() == *f.data, "{}", f.name);
    }
    let reqs = hub.requests();
    for d in cosmos3_decoys() {
        assert!(
            !reqs.iter().any(|r| r.path.ends_with(&d.name)),
            "{} must not be requested",
            d.name
        );
    }
    assert!(!reqs.iter().any(|r| r.path.ends_with("model_index.json")));

    // The in-process loader takes the snapshot as it is.
    #[cfg(feature = "cosmos")]
    gstvsssummarize::backend::cosmos::engine::Engine::load(&dir, &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("the downloaded Cosmos3 snapshot does not load: {e}"));

    // Reused: no request at all, nor with no Hub, nor offline.
    let n = hub.requests().len();
    assert_eq!(fetch("test/cosmos3", &e).unwrap(), dir);
    assert_eq!(hub.requests().len(), n, "the second fetch used the network");
    let endpoint = hub.endpoint();
    drop(hub);
    assert_eq!(fetch("test/cosmos3", &e).unwrap(), dir);
    let off = env(&endpoint, &t.0, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(fetch("test/cosmos3", &off).unwrap(), dir);

    // A shard gone from a folder: the snapshot is not complete offline.
    let shard = dir.join("transformer/diffusion_pytorch_model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    assert!(fetch("test/cosmos3", &off)
        .unwrap_err()
        .contains("HF_HUB_OFFLINE"));
}

/// A missing shard of a folder is linked again from its blob, and a blob
/// gone is downloaded, at its nested path.
#[test]
fn cosmos3_missing_shard_is_fetched_again() {
    let hub = FakeHub::start(vec![HubRepo::new("test/cosmos3", cosmos3_files())]);
    let t = Tmp::new("cosmos3-shard");
    let e = env(&hub.endpoint(), &t.0, &[]);
    let dir = fetch("test/cosmos3", &e).unwrap();
    let name = "vision_encoder/model.safetensors";
    let f = hub.file("test/cosmos3", C_MAIN, name);
    let link = dir.join(name);
    let blob = dir
        .join("vision_encoder")
        .join(std::fs::read_link(&link).unwrap());
    std::fs::remove_file(&link).unwrap();
    let n = hub.requests().len();
    assert_eq!(fetch("test/cosmos3", &e).unwrap(), dir);
    assert!(
        !hub.requests()[n..]
            .iter()
            .any(|r| r.path.contains("/resolve/")),
        "relinked, not downloaded"
    );
    assert!(std::fs::read(&link).unwrap() == *f.data);
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let n = hub.requests().len();
    assert_eq!(fetch("test/cosmos3", &e).unwrap(), dir);
    assert!(hub.requests()[n..].iter().any(|r| r.is_body_of(name)));
    assert!(std::fs::read(&link).unwrap() == *f.data);
}

#[test]
fn cosmos3_without_vision_encoder_is_refused() {
    let files: Vec<HubFile> = cosmos3_files()
        .into_iter()
        .filter(|f| !f.name.starts_with("vision_encoder/"))
        .collect();
    let hub = FakeHub::start(vec![HubRepo::new("test/cosmos3", files)]);
    let t = Tmp::new("cosmos3-novis");
    let err = fetch("test/cosmos3", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(
        err.contains("hf:test/cosmos3@main")
            && err.contains("no vision_encoder/*.safetensors")
            && err.contains("needs both"),
        "{err}"
    );
    assert!(!hub.requests().iter().any(|r| r.path.contains("/resolve/")));
}

/// An index whose weight_map names `../x.safetensors` is refused: nothing
/// is fetched for it and nothing lands outside its folder.
#[test]
fn cosmos3_hostile_index_is_refused() {
    let index = json!({
        "metadata": {"total_size": 1},
        "weight_map": {
            "embed_tokens.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "norm.weight": "../x.safetensors",
        }
    });
    let files: Vec<HubFile> = cosmos3_files()
        .into_iter()
        .map(|f| {
            if f.name.ends_with(".safetensors.index.json") {
                HubFile::new(&f.name, index.to_string().into_bytes())
            } else {
                f
            }
        })
        .collect();
    let hub = FakeHub::start(vec![HubRepo::new("test/cosmos3", files)]);
    let t = Tmp::new("cosmos3-hostile");
    let err = fetch("test/cosmos3", &env(&hub.endpoint(), &t.0, &[])).unwrap_err();
    assert!(
        err.contains("'../x.safetensors'") && err.contains("not a plain file name"),
        "{err}"
    );
    assert!(!hub
        .requests()
        .iter()
        .any(|r| r.path.contains("x.safetensors")));
    let rd = repo_dir(&t.0, "test/cosmos3");
    let snap = rd.join("snapshots").join(C_MAIN);
    assert!(snap.join("x.safetensors").symlink_metadata().is_err());
    assert!(rd
        .join("snapshots/x.safetensors")
        .symlink_metadata()
        .is_err());
    assert!(!rd.join("refs").join("main").exists());
}

/// Our nested layout is what huggingface_hub reads.
#[test]
fn cosmos3_cache_is_read_by_huggingface_hub() {
    let Some(py) = hf_python() else { return };
    let hub = FakeHub::start(vec![HubRepo::new("test/cosmos3", cosmos3_files())]);
    let t = Tmp::new("cosmos3-python");
    let ours = fetch("test/cosmos3", &env(&hub.endpoint(), &t.0, &[])).unwrap();
    let seen = python(
        &py,
        &[
            ("HF_HOME", t.0.display().to_string()),
            ("HF_HUB_OFFLINE", "1".into()),
        ],
        "import os\n\
         from huggingface_hub import snapshot_download, scan_cache_dir\n\
         p = snapshot_download('test/cosmos3')\n\
         assert not scan_cache_dir().warnings, scan_cache_dir().warnings\n\
         assert os.path.isfile(os.path.join(p, 'vision_encoder', 'model.safetensors'))\n\
         print(p)",
    );
    assert_eq!(PathBuf::from(seen), ours);
}
