//! Talking to an OCI registry through the Distribution API (v2): the references users type
//! (`oci://HOST[:PORT]/REPO[:TAG]`), credentials (the environment, else `~/.docker/config.json`), Basic and
//! Bearer-token authentication, and the few requests blast needs: blob HEAD, GET and upload (monolithic,
//! or chunked PATCHes for blobs larger than the chunk size), manifest GET and PUT.
//!
//! HTTP is ureq's blocking client (rustls and the webpki roots for https; plain http with `--insecure`).
//! Every failure becomes one [`Error::Registry`] naming the registry, the request, what came back (the
//! HTTP status and the registry's own error code) and, when there is one, what to do about it. What the
//! bytes mean is not this module's business: [`crate::images::oci`] checks every one of them.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ureq::http;

use crate::error::{Error, IoContext, Result};
use crate::images::Progress;

/// The form every reference takes, shown when one does not parse.
pub const REFERENCE_FORM: &str = "oci://HOST[:PORT]/REPO[:TAG]";
/// Blobs larger than this go up in PATCH chunks of this size (`BLAST_REGISTRY_CHUNK_BYTES`), others in
/// one PUT. 32 MiB stays below the request-size caps of common proxies in front of registries.
pub const DEFAULT_CHUNK_BYTES: u64 = 32 << 20;
fn stalled_hint(waited: Duration) -> String {
    format!(
        "nothing came for {} s: the link or the registry stalled (BLAST_REGISTRY_TIMEOUT sets how long to wait)",
        waited.as_secs()
    )
}

/// The slowest link an upload is given time for, in bytes a second: the answer to a body of N bytes may
/// take the timeout plus N / this (a 32 MiB chunk: 34 minutes more).
const SLOWEST_LINK_BYTES: u64 = 16 << 10;
/// The largest manifest blast reads (what registries commonly accept).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest error body or token answer blast reads.
const MAX_SMALL_BODY: u64 = 1 << 20;

/// Where an image lives: `oci://HOST[:PORT]/REPO[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `HOST[:PORT]`, as typed.
    pub registry: String,
    /// The repository name, `/`-separated lowercase components.
    pub repository: String,
    /// `latest` unless given.
    pub tag: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "oci://{}/{}:{}",
            self.registry, self.repository, self.tag
        )
    }
}

impl Reference {
    /// Parses `oci://HOST[:PORT]/REPO[:TAG]` (the Distribution spec's grammar for names and tags).
    pub fn parse(text: &str) -> Result<Reference> {
        // Credentials before the host (`oci://user:password@host/…`, the password may hold a `/`)
        // are never repeated: an `@` with a `/` after it is theirs (a digest's comes after the last).
        let (shown, userinfo) = match text.strip_prefix("oci://").and_then(|rest| {
            let at = rest.rfind('@')?;
            rest[at..]
                .contains('/')
                .then(|| rest[at + 1..].split('/').next())?
        }) {
            Some(host) => (format!("oci://…@{host}/…"), true),
            None => (text.to_owned(), false),
        };
        let bad = |why: &str| {
            Error::Invalid(format!(
                "`{shown}` is not a registry reference: {why}; expected {REFERENCE_FORM}, \
                 e.g. oci://localhost:5000/team/web:v1"
            ))
        };
        if userinfo {
            return Err(bad(
                "credentials do not go in the reference (set BLAST_REGISTRY_USERNAME and \
                 BLAST_REGISTRY_PASSWORD)",
            ));
        }
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it names no repository after the host"))?;
        if !valid_registry(registry) {
            return Err(bad(
                "the host is not HOST or HOST:PORT (a port from 1 to 65535)",
            ));
        }
        if path.contains('@') {
            return Err(bad("digests (@sha256:…) are not supported, name a tag"));
        }
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match path[last_slash..].find(':') {
            Some(i) => (&path[..last_slash + i], &path[last_slash + i + 1..]),
            None => (path, "latest"),
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad(
                "the repository must be `/`-separated components of lowercase letters and digits, \
                 joined by `.`, `_`, `__` or dashes",
            ));
        }
        if !valid_tag(tag) {
            return Err(bad(
                "the tag must be 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`",
            ));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(bracketed) = registry.strip_prefix('[') {
        let Some((inner, after)) = bracketed.split_once(']') else {
            return false;
        };
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    host_ok && port_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        match &component[start..i] {
            "." | "_" | "__" => {}
            sep if sep.bytes().all(|b| b == b'-') => {}
            _ => return false,
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they came from, for messages.
    pub origin: String,
}

impl fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({} from {})", self.username, self.origin)
    }
}

impl Credentials {
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", BASE64.encode(pair))
    }
}

/// The credentials for `registry`: `BLAST_REGISTRY_USERNAME` and `BLAST_REGISTRY_PASSWORD` when set, else the
/// `auths` entry of Docker's config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), else none.
pub fn credentials_for(registry: &str) -> Result<Option<Credentials>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("BLAST_REGISTRY_USERNAME"),
        var("BLAST_REGISTRY_PASSWORD"),
    ) {
        (Some(username), Some(password)) => {
            return Ok(Some(Credentials {
                username,
                password,
                origin: "BLAST_REGISTRY_USERNAME/BLAST_REGISTRY_PASSWORD".into(),
            }));
        }
        (None, None) => {}
        (username, _) => {
            let missing = match username {
                Some(_) => "BLAST_REGISTRY_PASSWORD",
                None => "BLAST_REGISTRY_USERNAME",
            };
            return Err(Error::Invalid(format!(
                "{missing} is unset or empty: set both BLAST_REGISTRY_USERNAME and BLAST_REGISTRY_PASSWORD, or neither"
            )));
        }
    }
    // A Docker config that cannot be read is named once the registry asks for credentials
    // ([`credentials_hint`]): a registry that needs none works without them.
    Ok(docker_login(registry).unwrap_or(None))
}

/// The credentials `docker login` left for `registry`, if any; what stops reading them, if something
/// does.
fn docker_login(registry: &str) -> Result<Option<Credentials>, String> {
    let Some(config) = docker_config() else {
        return Ok(None);
    };
    let unreadable = |why: String| {
        format!(
            "`{}` cannot be read for the credentials of {registry}: {why}; fix it, or set \
             BLAST_REGISTRY_USERNAME and BLAST_REGISTRY_PASSWORD",
            config.display()
        )
    };
    match std::fs::read_to_string(&config) {
        Ok(text) => docker_credentials(&text, registry).map_err(unreadable),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// Docker's configuration file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".docker/config.json")),
    }
}

/// How to give blast credentials for `registry`: the variables, or `docker login`, unless Docker's
/// configuration keeps them in a credential helper (`credHelpers`, `credsStore`), which blast does not
/// read, where `docker login` would change nothing.
fn credentials_hint(registry: &str) -> String {
    if let Err(unreadable) = docker_login(registry) {
        return unreadable;
    }
    let helper = docker_config()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| credential_helper(&text, registry));
    match helper {
        Some(helper) => format!(
            "set BLAST_REGISTRY_USERNAME and BLAST_REGISTRY_PASSWORD (Docker keeps its login in the \
             credential helper `docker-credential-{helper}`, which blast does not read)"
        ),
        None => "set BLAST_REGISTRY_USERNAME and BLAST_REGISTRY_PASSWORD, or `docker login` to it"
            .into(),
    }
}

/// The credential helper a Docker config names for `registry`: its `credHelpers` entry, else
/// `credsStore`.
fn credential_helper(text: &str, registry: &str) -> Option<String> {
    let config: serde_json::Value = serde_json::from_str(text).ok()?;
    let helper = config
        .get("credHelpers")
        .and_then(|helpers| helpers.get(registry))
        .or_else(|| config.get("credsStore"))?;
    helper.as_str().map(str::to_owned)
}

/// The `auths.<registry>.auth` entry of a Docker config (keys may carry a scheme and a path, as `docker
/// login` writes them for some registries): base64 of `user:password`.
fn docker_credentials(text: &str, registry: &str) -> Result<Option<Credentials>, String> {
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let host_of = |key: &str| {
        let lower = key.to_ascii_lowercase();
        let key = match (lower.starts_with("https://"), lower.starts_with("http://")) {
            (true, _) => &key["https://".len()..],
            (_, true) => &key["http://".len()..],
            _ => key,
        };
        key.split('/').next().unwrap_or_default().to_owned()
    };
    let Some((key, entry)) = auths.iter().find(|(key, _)| host_of(key) == registry) else {
        return Ok(None);
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    // Found by exploratory testing: these were read as a malformed `auth`, or not at all.
    let Some(auth) = field("auth") else {
        return match (field("username"), field("password"), field("identitytoken")) {
            (Some(username), Some(password), _) => Ok(Some(Credentials {
                username: username.to_owned(),
                password: password.to_owned(),
                origin: format!("Docker's config (auths.{key})"),
            })),
            (.., Some(_)) => Err(format!(
                "`auths.{key}` holds an identity token (an OAuth refresh token), which blast does not \
                 use"
            )),
            _ => Ok(None),
        };
    };
    let decoded = BASE64
        .decode(auth.trim())
        .map_err(|_| format!("`auths.{key}.auth` is not base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| format!("`auths.{key}.auth` is not UTF-8 once decoded"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("`auths.{key}.auth` is not `user:password` once decoded"))?;
    Ok(Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
        origin: format!("Docker's config (auths.{key})"),
    }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"` (RFC 7235 auth-params, quoted
/// strings with backslash escapes, commas inside quotes).
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let mut fields = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        fields.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: field("realm")?,
            service: field("service"),
            scope: field("scope"),
        }),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a request sends.
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, reported as progress while they go out. Reopened for a retry.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        progress: &'a dyn Progress,
    },
}

impl Payload<'_> {
    /// How long the answer to a request carrying this is waited for, and each read of it: the answer
    /// to a file's bytes comes once the registry has them all, which a proxy in front of it, or the
    /// socket's buffers, may still be sending on after the last byte left blast: it may take as long
    /// as the bytes at the slowest link worth waiting for.
    fn answer_time(&self, timeout: Duration) -> Duration {
        match self {
            Payload::File { len, .. } => {
                timeout.saturating_add(Duration::from_secs(len / SLOWEST_LINK_BYTES))
            }
            Payload::Empty | Payload::Bytes(_) => timeout,
        }
    }
}

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    reference: Reference,
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`.
    base: String,
    insecure: bool,
    credentials: Option<Credentials>,
    /// The `Authorization` value that last worked (or that a challenge asked for).
    authorization: Mutex<Option<String>>,
    chunk_bytes: u64,
    /// How long the registry may stay silent (`BLAST_REGISTRY_TIMEOUT`).
    timeout: Duration,
}

/// What a response carried that callers use.
struct Answer {
    status: u16,
    response: http::Response<ureq::Body>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// How long a registry may take to connect, take a request and answer it, unless
/// `BLAST_REGISTRY_TIMEOUT` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `BLAST_REGISTRY_TIMEOUT`: a day.
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// A positive number up to `max` from the environment variable `name`, if set.
fn positive_var(name: &str, unit: &str, max: u64) -> Result<Option<u64>> {
    let Some(value) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match value.trim().parse() {
        Ok(n) if n > 0 && n <= max => Ok(Some(n)),
        _ => Err(Error::Invalid(format!(
            "{name}=`{value}` is not a positive number of {unit} up to {max}"
        ))),
    }
}

impl Client {
    /// A client for `reference`'s repository, over https (plain http when `insecure`), with the credentials
    /// [`credentials_for`] finds, the chunk size `BLAST_REGISTRY_CHUNK_BYTES` and the time
    /// `BLAST_REGISTRY_TIMEOUT` (seconds) a registry may take to connect, take a request and answer it.
    pub fn new(reference: &Reference, insecure: bool) -> Result<Client> {
        let chunk_bytes = positive_var("BLAST_REGISTRY_CHUNK_BYTES", "bytes", 1 << 40)?
            .unwrap_or(DEFAULT_CHUNK_BYTES);
        let timeout = positive_var("BLAST_REGISTRY_TIMEOUT", "seconds", MAX_TIMEOUT_SECS)?
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let credentials = credentials_for(&reference.registry)?;
        Ok(Client::build(
            reference,
            insecure,
            credentials,
            chunk_bytes,
            timeout,
        ))
    }

    fn build(
        reference: &Reference,
        insecure: bool,
        credentials: Option<Credentials>,
        chunk_bytes: u64,
        timeout: Duration,
    ) -> Client {
        // A body is not timed as a whole: a large blob may take longer on a slow link. Each read and
        // write is: a link that stops moving fails after the timeout, mid-body too.
        let config = ureq::Agent::config_builder()
            // Statuses are answers to interpret here (404 from a HEAD means "upload it").
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_send_request(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .user_agent(concat!("blast/", env!("CARGO_PKG_VERSION")))
            .build();
        let scheme = if insecure { "http" } else { "https" };
        Client {
            agent: config.into(),
            base: format!("{scheme}://{}", reference.registry),
            reference: reference.clone(),
            insecure,
            credentials,
            authorization: Mutex::new(None),
            chunk_bytes,
            timeout,
        }
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn repo_url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.reference.repository)
    }

    fn authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `url` is on the registry itself: the same scheme, host and port.
    fn on_registry(&self, url: &str) -> bool {
        let origin = |url: &str| {
            let uri: http::Uri = url.parse().ok()?;
            let scheme = uri.scheme_str()?.to_ascii_lowercase();
            let default_port = if scheme == "https" { 443 } else { 80 };
            let port = uri.port_u16().unwrap_or(default_port);
            Some((scheme, uri.host()?.to_ascii_lowercase(), port))
        };
        origin(url).is_some_and(|theirs| Some(theirs) == origin(&self.base))
    }

    fn set_authorization(&self, value: String) {
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }

    /// An error about request `method url`.
    fn error(&self, method: &'static str, url: &str, outcome: String, hint: Option<&str>) -> Error {
        Error::Registry {
            registry: self.reference.registry.clone(),
            method,
            url: url.to_owned(),
            outcome,
            hint: hint.map(str::to_owned),
        }
    }

    /// A request that could not be made at all (nothing listens, TLS failed, the connection broke).
    /// `answer_time`: how long the answer was given; each write of the request had the timeout.
    fn transport(
        &self,
        method: &'static str,
        url: &str,
        e: &ureq::Error,
        answer_time: Duration,
    ) -> Error {
        let hint = match e {
            // Connected, then silence: the link or the registry stalled.
            ureq::Error::Timeout(ureq::Timeout::PerWrite | ureq::Timeout::SendRequest) => {
                stalled_hint(self.timeout)
            }
            ureq::Error::Timeout(timeout) if *timeout != ureq::Timeout::Connect => {
                stalled_hint(answer_time)
            }
            // It answered, but with redirects that lead nowhere (found by exploratory testing: the
            // hint asked whether it was running).
            ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
                "the registry answered with redirects that lead nowhere: its configuration (or a proxy's \
                 before it) is at fault; tell whoever runs it"
                    .into()
            }
            _ if self.insecure => "is the registry running, and is this its address?".into(),
            _ => "is the registry reachable? if it serves plain http (a local registry), pass --insecure"
                .into(),
        };
        self.error(method, url, format!("failed: {e}"), Some(&hint))
    }

    /// An answer that is not the one expected: the status and the registry's own error codes.
    fn unexpected(&self, method: &'static str, url: &str, mut answer: Answer) -> Error {
        let body = answer
            .response
            .body_mut()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .unwrap_or_default();
        let codes: Vec<String> = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("?");
                match e.get("message").and_then(|m| m.as_str()) {
                    Some(message) => format!("{code}: {message}"),
                    None => code.to_owned(),
                }
            })
            .collect();
        let outcome = if codes.is_empty() {
            format!("answered HTTP {}", answer.status)
        } else {
            format!("answered HTTP {} ({})", answer.status, codes.join("; "))
        };
        let hint = match (answer.status, &self.credentials) {
            (401, Some(credentials)) => Some(format!(
                "the registry refused the credentials from {}: check them (or `docker login` again)",
                credentials.origin
            )),
            (401 | 403, None) => Some(format!(
                "the registry wants credentials: {}",
                credentials_hint(&self.reference.registry)
            )),
            (403, Some(credentials)) => Some(format!(
                "the credentials from {} may not do this in this repository",
                credentials.origin
            )),
            _ => None,
        };
        self.error(method, url, outcome, hint.as_deref())
    }

    /// Sends one request, answering a 401's challenge once (Basic with the credentials, or a Bearer token
    /// from the challenge's realm) and sending it again.
    fn send(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
    ) -> Result<Answer> {
        let mut answered_challenge = false;
        loop {
            let mut builder = http::Request::builder().method(method).uri(url);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            // Credentials and tokens are the registry's: an upload's `Location` may lead to a storage
            // host, which gets none (as Docker attaches them by host).
            if self.on_registry(url)
                && let Some(auth) = self.authorization()
            {
                builder = builder.header("Authorization", auth);
            }
            let built =
                |e: http::Error| self.error(method, url, format!("cannot be built: {e}"), None);
            let response = match payload {
                Payload::Empty => {
                    // Proxies in front of registries may refuse a POST or PUT without a length.
                    if !matches!(method, "GET" | "HEAD") {
                        builder = builder.header("Content-Length", "0");
                    }
                    self.agent.run(builder.body(()).map_err(built)?)
                }
                Payload::Bytes(bytes) => {
                    let request = builder.body(*bytes).map_err(built)?;
                    self.agent.run(request)
                }
                Payload::File {
                    path,
                    offset,
                    len,
                    progress,
                } => {
                    let mut file = File::open(path).at("opening blob", path)?;
                    file.seek(SeekFrom::Start(*offset))
                        .at("reading blob", path)?;
                    let mut reader = Reported {
                        inner: file.take(*len),
                        progress: *progress,
                    };
                    let request = builder
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_reader(&mut reader))
                        .map_err(built)?;
                    let patient = payload.answer_time(self.timeout);
                    let request = self
                        .agent
                        .configure_request(request)
                        .timeout_recv_response(Some(patient))
                        .timeout_per_read(Some(patient))
                        .build();
                    self.agent.run(request)
                }
            }
            .map_err(|e| self.transport(method, url, &e, payload.answer_time(self.timeout)))?;
            let answer = Answer {
                status: response.status().as_u16(),
                response,
            };
            // Another host's challenge is not answered: its realm would get the credentials.
            if answer.status != 401 || answered_challenge || !self.on_registry(url) {
                return Ok(answer);
            }
            answered_challenge = true;
            let challenge = answer.header("WWW-Authenticate");
            match challenge.as_deref().and_then(parse_challenge) {
                Some(Challenge::Basic) => match &self.credentials {
                    Some(credentials) => self.set_authorization(credentials.basic()),
                    None => return Err(self.unexpected(method, url, answer)),
                },
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let token = self.token(&realm, service.as_deref(), scope.as_deref())?;
                    self.set_authorization(format!("Bearer {token}"));
                }
                None => return Err(self.unexpected(method, url, answer)),
            }
        }
    }

    /// The token flow: GET the realm with the service and scope (and the credentials, when there are any)
    /// and take `token` (or `access_token`) from its JSON.
    fn token(&self, realm: &str, service: Option<&str>, scope: Option<&str>) -> Result<String> {
        let mut url = realm.to_owned();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        for (key, value) in [("service", service), ("scope", scope)] {
            if let Some(value) = value {
                url.push_str(&format!("{sep}{key}={}", percent_encode(value)));
                sep = '&';
            }
        }
        let mut request = self.agent.get(&url);
        if let Some(credentials) = &self.credentials {
            request = request.header("Authorization", credentials.basic());
        }
        let response = request
            .call()
            .map_err(|e| self.transport("GET", &url, &e, self.timeout))?;
        let mut answer = Answer {
            status: response.status().as_u16(),
            response,
        };
        if answer.status != 200 {
            let mut error = self.unexpected("GET", &url, answer);
            if let Error::Registry { hint, .. } = &mut error {
                *hint = Some(match &self.credentials {
                    Some(_) => "the token service refused these credentials: check them".to_owned(),
                    None => format!(
                        "the token service wants credentials: {}",
                        credentials_hint(&self.reference.registry)
                    ),
                });
            }
            return Err(error);
        }
        let body = answer
            .response
            .body_mut()
            .with_config()
            .limit(MAX_SMALL_BODY)
            .read_to_vec()
            .map_err(|e| self.transport("GET", &url, &e, self.timeout))?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            self.error(
                "GET",
                &url,
                format!("answered with no JSON token ({e})"),
                None,
            )
        })?;
        ["token", "access_token"]
            .iter()
            .find_map(|key| value.get(key).and_then(|t| t.as_str()))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| self.error("GET", &url, "answered with no token".into(), None))
    }

    /// Whether the repository has blob `digest` (HEAD).
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        let url = self.repo_url(&format!("blobs/{digest}"));
        let answer = self.send("HEAD", &url, &[], &Payload::Empty)?;
        match answer.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.unexpected("HEAD", &url, answer)),
        }
    }

    /// Uploads `size` bytes from `path` as blob `digest`: POST for an upload session, then one PUT with the
    /// bytes when they fit in a chunk, else PATCHes of a chunk each and a closing PUT.
    pub fn upload_blob(
        &self,
        digest: &str,
        path: &Path,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let start = self.repo_url("blobs/uploads/");
        let answer = self.send("POST", &start, &[], &Payload::Empty)?;
        if answer.status != 202 {
            return Err(self.unexpected("POST", &start, answer));
        }
        let mut location = self.location("POST", &start, &answer)?;
        let octets = ("Content-Type", "application/octet-stream");
        let close = |location: &str| {
            let sep = if location.contains('?') { '&' } else { '?' };
            format!("{location}{sep}digest={}", percent_encode(digest))
        };
        if size <= self.chunk_bytes {
            let url = close(&location);
            let payload = Payload::File {
                path,
                offset: 0,
                len: size,
                progress,
            };
            let answer = self.send("PUT", &url, &[octets], &payload)?;
            return match answer.status {
                201 | 204 => Ok(()),
                _ => Err(self.unexpected("PUT", &url, answer)),
            };
        }
        let mut offset = 0;
        while offset < size {
            let len = self.chunk_bytes.min(size - offset);
            let range = format!("{offset}-{}", offset + len - 1);
            let payload = Payload::File {
                path,
                offset,
                len,
                progress,
            };
            let answer = self.send(
                "PATCH",
                &location,
                &[octets, ("Content-Range", range.as_str())],
                &payload,
            )?;
            if answer.status != 202 {
                return Err(self.unexpected("PATCH", &location, answer));
            }
            location = self.location("PATCH", &location, &answer)?;
            offset += len;
        }
        let url = close(&location);
        let answer = self.send("PUT", &url, &[], &Payload::Empty)?;
        match answer.status {
            201 | 204 => Ok(()),
            _ => Err(self.unexpected("PUT", &url, answer)),
        }
    }

    /// The upload session's next URL: its `Location`, resolved against `url`, the request's (RFC
    /// 3986). Found by exploratory testing: a relative one was taken as a path on the registry, where
    /// the session may live on a storage host an earlier `Location` led to.
    fn location(&self, method: &'static str, url: &str, answer: &Answer) -> Result<String> {
        let location = answer.header("Location").ok_or_else(|| {
            self.error(
                method,
                url,
                "answered without a Location for the upload".into(),
                None,
            )
        })?;
        url::Url::parse(url)
            .and_then(|base| base.join(&location))
            .map(String::from)
            .map_err(|e| {
                self.error(
                    method,
                    url,
                    format!("answered with a Location that is no URL (`{location}`: {e})"),
                    None,
                )
            })
    }

    /// Streams blob `digest` into `out`, reading at most `limit` bytes (one more than the manifest
    /// records, so a longer blob shows); returns how many came.
    pub fn get_blob(
        &self,
        digest: &str,
        limit: u64,
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let url = self.repo_url(&format!("blobs/{digest}"));
        let answer = self.send("GET", &url, &[], &Payload::Empty)?;
        if answer.status != 200 {
            return Err(self.unexpected("GET", &url, answer));
        }
        let mut reader = Reported {
            inner: answer.response.into_body().into_reader().take(limit),
            progress,
        };
        io::copy(&mut reader, out).map_err(|e| {
            let timed_out = e.kind() == io::ErrorKind::TimedOut
                || matches!(
                    e.get_ref()
                        .and_then(|inner| inner.downcast_ref::<ureq::Error>()),
                    Some(ureq::Error::Timeout(_))
                );
            let stalled = timed_out.then(|| stalled_hint(self.timeout));
            self.error("GET", &url, format!("broke off: {e}"), stalled.as_deref())
        })
    }

    /// The tag's manifest, asking for `accept`: its `Content-Type` and bytes (at most
    /// [`MAX_MANIFEST_BYTES`]).
    pub fn get_manifest(&self, accept: &str) -> Result<(Option<String>, Vec<u8>)> {
        let url = self.repo_url(&format!("manifests/{}", self.reference.tag));
        let mut answer = self.send("GET", &url, &[("Accept", accept)], &Payload::Empty)?;
        match answer.status {
            200 => {}
            404 => {
                let mut error = self.unexpected("GET", &url, answer);
                if let Error::Registry { hint, .. } = &mut error {
                    *hint = Some(
                        "no such repository or tag: check the reference, or push it first".into(),
                    );
                }
                return Err(error);
            }
            _ => return Err(self.unexpected("GET", &url, answer)),
        }
        let content_type = answer.header("Content-Type");
        let digest = answer.header("Docker-Content-Digest");
        let bytes = answer
            .response
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                // A manifest that stalls is said as a blob that stalls is (found by exploratory
                // testing: "timeout: per read" alone).
                ureq::Error::Timeout(_) | ureq::Error::BodyStalled => self.error(
                    "GET",
                    &url,
                    format!("stalled sending the manifest: {e}"),
                    Some(&stalled_hint(self.timeout)),
                ),
                e => self.error(
                    "GET",
                    &url,
                    format!("broke off or sent too much: {e}"),
                    None,
                ),
            })?;
        // The registry's own digest of the manifest, where it sends one: bytes that are not what it
        // stored (damaged on its disk, changed on the way) fail here, not as a blob they describe.
        if let Some(digest) = digest.filter(|d| d.starts_with("sha256:")) {
            let got = crate::images::oci::sha256_digest(&bytes);
            if got != digest {
                return Err(self.error(
                    "GET",
                    &url,
                    format!("sent a manifest whose sha256 is {got}, not the {digest} it names"),
                    Some("the manifest is damaged on the registry or was changed on the way: push it again"),
                ));
            }
        }
        Ok((content_type, bytes))
    }

    /// PUTs `bytes` as the tag's manifest.
    pub fn put_manifest(&self, bytes: &[u8], media_type: &str) -> Result<()> {
        let url = self.repo_url(&format!("manifests/{}", self.reference.tag));
        let answer = self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            &Payload::Bytes(bytes),
        )?;
        match answer.status {
            200 | 201 | 204 => Ok(()),
            _ => Err(self.unexpected("PUT", &url, answer)),
        }
    }
}

/// Reports what passes through as progress.
struct Reported<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for Reported<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_a_default_tag_and_refuse_what_the_grammar_does() {
        let r = Reference::parse("oci://localhost:5000/team/web:v1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("localhost:5000", "team/web", "v1.2")
        );
        assert_eq!(r.to_string(), "oci://localhost:5000/team/web:v1.2");
        let r = Reference::parse("oci://registry.example.org/a.b/c__d/e--f").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("a.b/c__d/e--f", "latest")
        );
        let r = Reference::parse("oci://[::1]:5000/x").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        for bad in [
            "localhost:5000/web",
            "docker://localhost/web",
            "oci://localhost",
            "oci://localhost/",
            "oci://local_host/web",
            "oci://localhost:http/web",
            "oci://localhost:70000/web",
            "oci://localhost/Web",
            "oci://localhost/web/",
            "oci://localhost//web",
            "oci://localhost/-web",
            "oci://localhost/web..x",
            "oci://localhost/web:",
            "oci://localhost/web:.tag",
            "oci://localhost/web@sha256:00",
            "oci://me:s3cret@localhost:5000/web",
        ] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.contains(REFERENCE_FORM), "{bad}: {e}");
        }
        // Credentials in a reference are refused without being repeated, a `/` in the password too.
        for reference in [
            "oci://me:s3cret@localhost:5000/web:v1",
            "oci://me:s3/cret@localhost:5000/web:v1",
            "oci://me:s3@cret@localhost/web",
        ] {
            let e = Reference::parse(reference).unwrap_err().to_string();
            assert!(
                !e.contains("s3") && e.contains("credentials do not go in the reference"),
                "{e}"
            );
        }
    }

    #[test]
    fn challenges_parse_with_quoted_commas_and_escapes() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg \"x\"",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg \"x\"".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "a realm is required"
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    /// The requests a scripted registry saw: request line and `Authorization`.
    type Seen = std::sync::Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A registry of one repository that answers from a script: each connection gets one request, and
    /// `answer` maps (request line, Authorization) to a status line and extra headers. Returns the port
    /// and what it was asked.
    fn fake_registry(answer: fn(&str, Option<&str>, u16) -> (String, String)) -> (u16, Seen) {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let (mut auth, mut body_len) = (None, 0);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            auth = Some(value.trim().to_owned());
                        } else if name.eq_ignore_ascii_case("content-length") {
                            body_len = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                // Read whole: a socket closed with bytes unread sends a reset, which the client may
                // meet before the answer (a flaky "connection reset by peer").
                let _ = io::copy(&mut (&mut reader).take(body_len), &mut io::sink());
                let request = line.trim().to_owned();
                let (status, headers) = answer(&request, auth.as_deref(), port);
                log.lock().unwrap().push((request, auth));
                let body = if status.starts_with("200") && headers.contains("json") {
                    r#"{"token":"T0K"}"#
                } else {
                    ""
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (port, seen)
    }

    fn client(port: u16, credentials: Option<Credentials>) -> Client {
        let reference = Reference::parse(&format!("oci://127.0.0.1:{port}/team/app")).unwrap();
        Client::build(
            &reference,
            true,
            credentials,
            DEFAULT_CHUNK_BYTES,
            DEFAULT_TIMEOUT,
        )
    }

    fn me() -> Option<Credentials> {
        Some(Credentials {
            username: "me".into(),
            password: "pw".into(),
            origin: "the test".into(),
        })
    }

    #[test]
    fn a_bearer_challenge_gets_a_token_with_the_credentials_and_the_request_goes_again() {
        let (port, seen) = fake_registry(|request, auth, port| match (request, auth) {
            (r, _) if r.starts_with("GET /token?") => {
                ("200 OK".into(), "Content-Type: application/json\r\n".into())
            }
            (_, Some("Bearer T0K")) => ("200 OK".into(), String::new()),
            _ => (
                "401 Unauthorized".into(),
                format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",\
                     service=\"fake\",scope=\"repository:team/app:pull\"\r\n"
                ),
            ),
        });
        let client = client(port, me());
        assert!(client.has_blob("sha256:00").unwrap());
        // The token is kept for the next request.
        assert!(client.has_blob("sha256:01").unwrap());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(
            seen[0],
            ("HEAD /v2/team/app/blobs/sha256:00 HTTP/1.1".into(), None)
        );
        assert_eq!(
            seen[1],
            (
                "GET /token?service=fake&scope=repository%3Ateam%2Fapp%3Apull HTTP/1.1".into(),
                Some(format!("Basic {}", BASE64.encode("me:pw")))
            )
        );
        assert_eq!(seen[2].1.as_deref(), Some("Bearer T0K"));
        assert_eq!(
            seen[3],
            (
                "HEAD /v2/team/app/blobs/sha256:01 HTTP/1.1".into(),
                Some("Bearer T0K".into())
            )
        );
    }

    /// A relative `Location` is resolved against the URL that answered with it: a chunked upload that
    /// an absolute one led to a storage host stays there (found by exploratory testing: the second
    /// chunk went to the registry, which knows no such session), and one without a leading `/` is
    /// relative to the request's directory.
    #[test]
    fn a_relative_location_is_resolved_against_the_url_that_answered() {
        static STORAGE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let (storage, stored) = fake_registry(|request, _, _| match request {
            r if r.starts_with("PATCH /upload/1 ") => {
                ("202 Accepted".into(), "Location: /upload/2\r\n".into())
            }
            r if r.starts_with("PATCH") => ("202 Accepted".into(), "Location: 3\r\n".into()),
            _ => ("201 Created".into(), String::new()),
        });
        STORAGE.store(storage, std::sync::atomic::Ordering::Relaxed);
        let (port, seen) = fake_registry(|request, _, _| match request {
            r if r.starts_with("POST") => {
                let storage = STORAGE.load(std::sync::atomic::Ordering::Relaxed);
                (
                    "202 Accepted".into(),
                    format!("Location: http://127.0.0.1:{storage}/upload/1\r\n"),
                )
            }
            _ => ("404 Not Found".into(), String::new()),
        });
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"layer").unwrap();
        let reference = Reference::parse(&format!("oci://127.0.0.1:{port}/team/app")).unwrap();
        Client::build(&reference, true, None, 2, DEFAULT_TIMEOUT)
            .upload_blob("sha256:00", &blob, 5, &crate::images::NoProgress)
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            1,
            "only the POST goes to the registry: {seen:?}"
        );
        let stored: Vec<String> = stored.lock().unwrap().iter().map(|r| r.0.clone()).collect();
        let lines: Vec<&str> = stored
            .iter()
            .map(|r| r.split(" HTTP").next().unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                "PATCH /upload/1",
                "PATCH /upload/2",
                "PATCH /upload/3",
                "PUT /upload/3?digest=sha256%3A00"
            ],
            "{stored:?}"
        );
    }

    /// Found by exploratory testing: an upload whose `Location` leads to another host (a storage
    /// service) was sent there with the registry's credentials.
    #[test]
    fn credentials_go_to_the_registry_only() {
        static STORAGE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let (storage, stored) = fake_registry(|_, _, _| ("201 Created".into(), String::new()));
        STORAGE.store(storage, std::sync::atomic::Ordering::Relaxed);
        let (port, seen) = fake_registry(|request, auth, _| match (request, auth) {
            (_, None) => (
                "401 Unauthorized".into(),
                "WWW-Authenticate: Basic realm=\"fake\"\r\n".into(),
            ),
            (r, Some(_)) if r.starts_with("POST") => {
                let storage = STORAGE.load(std::sync::atomic::Ordering::Relaxed);
                (
                    "202 Accepted".into(),
                    format!("Location: http://127.0.0.1:{storage}/upload/1\r\n"),
                )
            }
            _ => ("201 Created".into(), String::new()),
        });
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, b"layer").unwrap();
        client(port, me())
            .upload_blob("sha256:00", &blob, 5, &crate::images::NoProgress)
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.last().unwrap().1,
            Some(format!("Basic {}", BASE64.encode("me:pw"))),
            "{seen:?}"
        );
        let stored = stored.lock().unwrap().clone();
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert!(
            stored[0].0.starts_with("PUT /upload/1?digest="),
            "{stored:?}"
        );
        assert_eq!(stored[0].1, None, "{stored:?}");
        // Nor through its challenge, whose realm it chooses (found by the review).
        let (asking, asked) = fake_registry(|request, _, port| match request {
            r if r.starts_with("GET /token") => {
                ("200 OK".into(), "Content-Type: application/json\r\n".into())
            }
            _ => (
                "401 Unauthorized".into(),
                format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\"\r\n"),
            ),
        });
        STORAGE.store(asking, std::sync::atomic::Ordering::Relaxed);
        let err = client(port, me())
            .upload_blob("sha256:00", &blob, 5, &crate::images::NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HTTP 401"), "{err}");
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].1, None, "{asked:?}");
        // The same origin spelled with its default port is the registry.
        let https = Client::build(
            &Reference::parse("oci://Registry.example/team/app").unwrap(),
            false,
            None,
            DEFAULT_CHUNK_BYTES,
            DEFAULT_TIMEOUT,
        );
        assert!(https.on_registry("https://registry.example:443/v2/x"));
        assert!(!https.on_registry("http://registry.example/v2/x"));
        assert!(!https.on_registry("https://registry.example.evil/v2/x"));
    }

    /// A registry on loopback that serves each connection with `serve` (given the request line and the
    /// request's body, read to its `Content-Length`) and the timeout-short client for it.
    fn scripted(serve: fn(&str, &mut std::net::TcpStream)) -> (Client, Duration) {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        serve(line.trim(), &mut stream);
                    }
                });
            }
        });
        let reference = Reference::parse(&format!("oci://127.0.0.1:{port}/team/app")).unwrap();
        let timeout = Duration::from_secs(1);
        let client = Client::build(&reference, true, None, DEFAULT_CHUNK_BYTES, timeout);
        (client, timeout)
    }

    /// Found by exploratory testing: the answer to an upload comes once the registry has the whole
    /// body, which a proxy, or the socket's buffers, may still be sending on after blast wrote its last
    /// byte; timing that wait like any answer failed every push over a slow link.
    #[test]
    fn an_upload_is_given_time_for_its_answer_by_its_size() {
        let (client, timeout) = scripted(|request, stream| {
            let answer = if request.starts_with("POST") {
                "202 Accepted\r\nLocation: /v2/team/app/blobs/uploads/1"
            } else {
                // The body is in; the answer takes three times the timeout.
                std::thread::sleep(Duration::from_secs(3));
                "201 Created"
            };
            let _ = write!(stream, "HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n");
        });
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        // 256 KiB: time for its answer is the timeout plus 16 s at the slowest link.
        std::fs::write(&blob, vec![7u8; 256 << 10]).unwrap();
        let started = std::time::Instant::now();
        client
            .upload_blob("sha256:00", &blob, 256 << 10, &crate::images::NoProgress)
            .unwrap();
        assert!(started.elapsed() > timeout * 3);
    }

    /// Found by exploratory testing: a blob whose bytes stop coming halfway kept a pull waiting
    /// forever, and `blast clean` behind it.
    #[test]
    fn a_body_that_stops_coming_fails_after_the_timeout() {
        let (client, _) = scripted(|_, stream| {
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
            let _ = stream.write_all(&[1u8; 1000]);
            // Then nothing, with the connection open.
            std::thread::sleep(Duration::from_secs(60));
        });
        let started = std::time::Instant::now();
        let err = client
            .get_blob(
                "sha256:00",
                1 << 20,
                &mut Vec::new(),
                &crate::images::NoProgress,
            )
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(
            err.contains("broke off") && err.contains("stalled"),
            "{err}"
        );
    }

    /// Found by exploratory testing: a registry that takes the connection and never answers kept a
    /// pull waiting forever.
    #[test]
    fn a_registry_that_never_answers_fails_the_request_after_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            // Holds every connection open, reading nothing and writing nothing.
            let held: Vec<_> = listener.incoming().collect();
            drop(held);
        });
        let reference = Reference::parse(&format!("oci://127.0.0.1:{port}/team/app")).unwrap();
        let timeout = Duration::from_secs(1);
        let client = Client::build(&reference, true, None, DEFAULT_CHUNK_BYTES, timeout);
        let started = std::time::Instant::now();
        let err = client.has_blob("sha256:00").unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
        assert!(
            err.contains("timeout") || err.contains("timed out"),
            "{err}"
        );
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    #[test]
    fn a_basic_challenge_is_answered_with_the_credentials_or_names_how_to_give_them() {
        let answer = |_: &str, auth: Option<&str>, _: u16| match auth {
            Some(a) if a == format!("Basic {}", BASE64.encode("me:pw")) => {
                ("404 Not Found".into(), String::new())
            }
            _ => (
                "401 Unauthorized".into(),
                "WWW-Authenticate: Basic realm=\"registry\"\r\n".into(),
            ),
        };
        let (port, seen) = fake_registry(answer);
        assert!(!client(port, me()).has_blob("sha256:00").unwrap());
        assert_eq!(seen.lock().unwrap().len(), 2);

        let (port, _) = fake_registry(answer);
        let err = client(port, None)
            .has_blob("sha256:00")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HTTP 401") && err.contains("BLAST_REGISTRY_USERNAME"),
            "{err}"
        );

        // Credentials the registry refuses are named as refused, with where they came from.
        let wrong = Some(Credentials {
            password: "not-pw".into(),
            ..me().unwrap()
        });
        let (port, _) = fake_registry(answer);
        let err = client(port, wrong)
            .has_blob("sha256:00")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HTTP 401") && err.contains("refused the credentials from the test"),
            "{err}"
        );
        // A registry that forbids what it is asked without credentials wants some.
        let (port, _) = fake_registry(|_: &str, _: Option<&str>, _: u16| {
            ("403 Forbidden".into(), String::new())
        });
        let err = client(port, None)
            .has_blob("sha256:00")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HTTP 403") && err.contains("wants credentials"),
            "{err}"
        );
    }

    #[test]
    fn docker_config_entries_match_the_registry_with_or_without_a_scheme() {
        let auth = BASE64.encode("me:s3:cret");
        let config = format!(
            r#"{{"auths":{{"https://other.example/v1/":{{"auth":"{}"}},"localhost:5000":{{"auth":"{auth}"}}}}}}"#,
            BASE64.encode("no:no")
        );
        let found = docker_credentials(&config, "localhost:5000")
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("me", "s3:cret")
        );
        let other = docker_credentials(&config, "other.example")
            .unwrap()
            .unwrap();
        assert_eq!(other.username, "no");
        assert_eq!(docker_credentials(&config, "elsewhere").unwrap(), None);
        assert!(docker_credentials(r#"{"auths":{"x":{"auth":"%%%"}}}"#, "x").is_err());
        // Found by exploratory testing: a scheme in capitals, `username` and `password` fields, and an
        // identity token were read as no login or a malformed `auth`.
        let fields = docker_credentials(
            r#"{"auths":{"HTTPS://x":{"auth":"","username":"u","password":"p"}}}"#,
            "x",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (fields.username.as_str(), fields.password.as_str()),
            ("u", "p")
        );
        let token = docker_credentials(r#"{"auths":{"x":{"auth":"","identitytoken":"t"}}}"#, "x");
        assert!(token.unwrap_err().contains("identity token"));
        assert!(
            !format!("{found:?}").contains("cret"),
            "Debug hides the password"
        );
        // Where `docker login` keeps them instead, which blast does not read.
        let helpers = r#"{"credsStore":"desktop","credHelpers":{"gcr.io":"gcloud"}}"#;
        assert_eq!(
            credential_helper(helpers, "gcr.io").as_deref(),
            Some("gcloud")
        );
        assert_eq!(
            credential_helper(helpers, "localhost:5000").as_deref(),
            Some("desktop")
        );
        assert_eq!(credential_helper(&config, "localhost:5000"), None);
    }
}
