//! The TCP proxy (`proxy = "tcp"`): each connection is spliced to the run current when
//! it was accepted and stays with it until either side closes.

use tokio::net::{TcpListener, TcpStream};

use super::Gate;
use super::routes::{HOLD, Router};

/// Accepts client connections on `listener` until the task is aborted. A connection
/// winding down (see [`Gate`]) goes on until either side closes it.
pub async fn serve(listener: TcpListener, router: Router, gate: Gate) {
    super::accept_each(&listener, &gate, |stream, peer, open| {
        let mut router = router.clone();
        tokio::spawn(async move {
            let _open = open;
            let Some(mut backend) = connect(&mut router).await else {
                tracing::debug!("proxy: no backend for {peer}, closing");
                return;
            };
            let mut client = stream;
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!("proxy: connection from {peer}: {e}");
            }
        });
    })
    .await;
}

/// A connection to the current backend; a refused connect (its run just went away) is
/// tried once more with another backend, once there is one. Waits up to [`HOLD`] for one.
async fn connect(router: &mut Router) -> Option<TcpStream> {
    let mut refused = None;
    for _ in 0..2 {
        let backend = match refused {
            Some(gone) => router.pick_instead_of(gone, HOLD).await?,
            None => router.pick(HOLD).await?,
        };
        match TcpStream::connect(backend).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Err(e) => tracing::debug!("proxy: connect to {backend}: {e}"),
        }
        refused = Some(backend);
    }
    None
}
