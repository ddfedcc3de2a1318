//! `holdfast http-token`: prints the token of the HTTP server's `/control` and the
//! dashboard URL that carries it. Only who may read `<state_dir>/http.token` (holdfast's
//! own user, root) gets it: the file's mode is the access check.

use std::path::Path;
use std::process::ExitCode;

use miette::miette;

use crate::{config, web};

pub fn run(config_path: &Path) -> miette::Result<ExitCode> {
    let plan = config::load(config_path).map_err(|e| miette!("{}", e.render_plain()))?;
    let Some(addr) = plan.daemon.http else {
        return Err(miette!(
            "{} has no `http` in [holdfast]: the HTTP server is off (add e.g. \
             http = \"127.0.0.1:9700\")",
            config_path.display()
        ));
    };
    let path = web::token::path(&plan.daemon.state_dir);
    // The owner check is the daemon's (a file of another user may be planted for it);
    // root may read the token of a daemon running as any user.
    let owner = if nix::unistd::geteuid().is_root() {
        web::token::Owner::Any
    } else {
        web::token::Owner::Ours
    };
    let token = web::token::read(&path, owner).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => miette!(
            "{}: no token yet; `holdfast up` writes it when the HTTP server starts",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => miette!(
            "{}: permission denied: only holdfast's own user and root may read the token",
            path.display()
        ),
        _ => miette!("{}: {e}", path.display()),
    })?;
    println!("{}", token.expose());
    eprintln!("dashboard: http://{addr}/#token={}", token.expose());
    Ok(ExitCode::SUCCESS)
}
