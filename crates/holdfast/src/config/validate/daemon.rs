//! `[holdfast]`: where holdfast keeps its socket, state and logs, who may use the socket,
//! and which of its variables services get.

use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::Validator;
use super::command::bad_env_name;
use super::privs::ServiceGroupHint;
use crate::config::diagnostic::Problem;
use crate::config::raw::RawDaemon;
use crate::model::{DaemonSettings, GroupRef, PRIVATE_ENV, defaults};

impl Validator<'_> {
    pub(super) fn daemon(&mut self, raw: RawDaemon, base_dir: &Path) -> DaemonSettings {
        DaemonSettings {
            control: self.path(raw.control.as_ref(), "control", defaults::CONTROL, base_dir),
            control_group: raw
                .control_group
                .as_ref()
                .and_then(|g| self.group(g, "holdfast.control_group")),
            admin_group: self.admin_group(&raw),
            state_dir: self.path(
                raw.state_dir.as_ref(),
                "state_dir",
                defaults::STATE_DIR,
                base_dir,
            ),
            log_dir: self.path(raw.log_dir.as_ref(), "log_dir", defaults::LOG_DIR, base_dir),
            pass_env: self.pass_env(raw.pass_env.as_deref().unwrap_or_default()),
            http: raw.http.as_ref().and_then(|http| self.http(http)),
            supervisord: self.supervisord(raw.supervisord.as_ref()).map(Box::new),
        }
    }

    /// `holdfast.http`: an IP address and a port, or a port alone (`":9700"`), which is
    /// on loopback. Any address may be written (the server warns when it is not
    /// loopback), but only loopback is ever assumed.
    fn http(&mut self, raw: &Spanned<String>) -> Option<std::net::SocketAddr> {
        let text = raw.get_ref();
        let port_alone = || text.strip_prefix(':').unwrap_or(text).parse::<u16>();
        match (text.parse::<std::net::SocketAddr>(), port_alone()) {
            (Ok(addr), _) => Some(addr),
            (Err(_), Ok(port)) => Some((std::net::Ipv4Addr::LOCALHOST, port).into()),
            (Err(_), Err(_)) => {
                self.push(
                    Problem::new(
                        format!("invalid address {:?} in `holdfast.http`", raw.get_ref()),
                        raw.span(),
                        "not an IP address with a port, nor a port",
                    )
                    .with_help(
                        "write a port (\":9700\": on loopback, only this machine can \
                         connect) or an IP address and a port, e.g. \"[::1]:9700\"",
                    ),
                );
                None
            }
        }
    }

    /// `holdfast.pass_env`: names of variables, none of them holdfast's private ones.
    fn pass_env(&mut self, raw: &[Spanned<String>]) -> Vec<String> {
        let mut names = Vec::new();
        for name in raw {
            let n = name.get_ref();
            if let Some(label) = bad_env_name(n) {
                self.push(
                    Problem::new(
                        format!("invalid environment variable name {n:?} in `holdfast.pass_env`"),
                        name.span(),
                        label,
                    )
                    .with_help("use a non-empty name without '=' or NUL, e.g. LC_ALL"),
                );
            } else if PRIVATE_ENV.contains(&n.as_str()) {
                self.push(
                    Problem::new(
                        format!("`{n}` in `holdfast.pass_env` is holdfast's own"),
                        name.span(),
                        "never passed on",
                    )
                    .with_help(
                        "it describes holdfast's situation, not a service's: remove it from the list",
                    ),
                );
            } else if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    fn path(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: &str,
        base_dir: &Path,
    ) -> PathBuf {
        let Some(raw) = raw else {
            return PathBuf::from(default);
        };
        if raw.get_ref().is_empty() {
            self.push(
                Problem::new(
                    format!("`holdfast.{key}` is empty"),
                    raw.span(),
                    "empty path",
                )
                .with_help(format!("remove the key to use the default \"{default}\"")),
            );
            return PathBuf::from(default);
        }
        base_dir.join(raw.get_ref())
    }

    /// `holdfast.admin_group`: only with a `control_group`, since the socket file is
    /// opened to that one group; admins are members of both.
    fn admin_group(&mut self, raw: &RawDaemon) -> Option<GroupRef> {
        let admin = raw.admin_group.as_ref()?;
        if raw.control_group.is_none() {
            self.push(
                Problem::new(
                    "`holdfast.admin_group` without `holdfast.control_group`",
                    admin.span(),
                    "nobody outside root could reach the socket",
                )
                .with_help(
                    "the socket is opened to `control_group` only: set it too, \
                     and make the admins members of both groups",
                ),
            );
            return None;
        }
        self.group(admin, "holdfast.admin_group")
    }

    fn group(&mut self, raw: &Spanned<String>, key: &str) -> Option<GroupRef> {
        let gid = self.gid(raw, key, ServiceGroupHint::Omitted)?;
        Some(GroupRef {
            name: raw.get_ref().clone(),
            gid,
        })
    }
}
