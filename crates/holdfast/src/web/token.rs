//! The token that opens `/control`: 32 random bytes from the kernel, written as hex to
//! `<state_dir>/http.token` (mode 0600). The file is reused across restarts, so that a
//! bookmarked dashboard URL (`#token=...`) and a peer's configured heartbeat keep
//! working; a file anyone else could have read is replaced.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The token file's name in the state directory.
pub const FILE: &str = "http.token";
/// Random bytes in a token.
const BYTES: usize = 32;

/// Where the token of a daemon with this state directory is.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// A token, as hex text.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log line by accident.
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `path`, or a new one written there when there is none or the file
    /// cannot be trusted (a symlink, not a regular file of holdfast's user, readable by
    /// others, not a token). Any other error (EIO, EMFILE, EACCES ...) is returned: a
    /// token that could not be read this once is not spent.
    pub fn load_or_create(path: &Path) -> io::Result<Token> {
        match read(path, Owner::Ours) {
            Ok(token) => return Ok(token),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if untrusted(&e) => {
                tracing::warn!(path = %path.display(), "replacing the HTTP token: {e}");
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", path.display()),
                ));
            }
        }
        let token = Token(hex(&random_bytes()?));
        write_new(path, &token)?;
        Ok(token)
    }

    /// The hex text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in constant time (for tokens of the
    /// right length: the length is no secret).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if presented.len() != ours.len() {
            return false;
        }
        let diff = ours
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Whose token file [`read`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Only one owned by this process's user: the daemon's own use.
    Ours,
    /// Any user's: root reading the token of a daemon running as another user.
    Any,
}

/// Whether `read` refused the file as one that cannot be trusted (replaced then), not
/// for an error of the moment.
fn untrusted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData || e.raw_os_error() == Some(libc::ELOOP)
}

/// The token in `path`: a regular file (a symlink is refused), owned by holdfast's user
/// (unless `owner` is [`Owner::Any`]), mode without group or other bits, holding one
/// token.
pub fn read(path: &Path, owner: Owner) -> io::Result<Token> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if !meta.is_file() {
        return Err(invalid("not a regular file".to_owned()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if owner == Owner::Ours && meta.uid() != euid {
        return Err(invalid(format!("owned by uid {}, not {euid}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(invalid(format!(
            "mode {:04o} lets others read it",
            meta.mode() & 0o7777
        )));
    }
    let mut text = String::new();
    (&mut file)
        .take(4 * BYTES as u64)
        .read_to_string(&mut text)?;
    let text = text.trim();
    if text.len() != 2 * BYTES || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("not a token (64 hex digits)".to_owned()));
    }
    Ok(Token(text.to_ascii_lowercase()))
}

/// Writes `token` to `path` as a [`crate::private_file`]: a reader sees the old file or
/// the whole new one.
fn write_new(path: &Path, token: &Token) -> io::Result<()> {
    crate::private_file::replace(path, format!("{}\n", token.0).as_bytes())
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// A random id for this daemon's start (16 hex digits), told apart from the previous
/// start's by a peer polling the heartbeat.
pub fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    let read = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Unique enough without the kernel's randomness: pid and start time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        bytes = (nanos ^ u64::from(std::process::id()) << 32).to_be_bytes();
    }
    hex(&bytes)
}

fn random_bytes() -> io::Result<[u8; BYTES]> {
    let mut bytes = [0; BYTES];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hf-token-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_token_is_created_0600_and_reused_across_restarts() {
        let dir = temp_dir("reuse");
        let path = path(&dir);
        let first = Token::load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.expose().len(), 64);
        let again = Token::load_or_create(&path).expect("read back");
        assert_eq!(first.expose(), again.expose());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_file_others_could_read_or_a_symlink_is_replaced() {
        let dir = temp_dir("replace");
        let path = path(&dir);
        let first = Token::load_or_create(&path).expect("created");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let second = Token::load_or_create(&path).expect("replaced");
        assert_ne!(
            first.expose(),
            second.expose(),
            "a token others could read is spent"
        );
        let target = dir.join("elsewhere");
        std::fs::write(&target, format!("{}\n", "a".repeat(64))).expect("target");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let third = Token::load_or_create(&path).expect("replaced");
        assert_ne!(third.expose(), "a".repeat(64));
        assert!(!std::fs::symlink_metadata(&path).expect("file").is_symlink());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_trust_failures_replace_a_token_file_and_any_owner_may_be_read() {
        let dir = temp_dir("eacces");
        let path = path(&dir);
        let first = Token::load_or_create(&path).expect("created");
        let fake = io::Error::from_raw_os_error(libc::EIO);
        assert!(!untrusted(&fake), "EIO is an error of the moment");
        assert!(!untrusted(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(untrusted(&io::Error::from_raw_os_error(libc::ELOOP)));
        assert_eq!(
            read(&path, Owner::Any).expect("read").expose(),
            first.expose()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token("ab".repeat(32));
        assert!(token.matches("ab".repeat(32).as_bytes()));
        assert!(!token.matches("ab".repeat(31).as_bytes()));
        assert!(!token.matches(format!("{}ac", "ab".repeat(31)).as_bytes()));
        assert!(!token.matches(b""));
    }
}
