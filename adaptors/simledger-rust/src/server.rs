//! The listener the handshake line names (unix socket or loopback TCP), with automatic mutual
//! TLS when the host sent its certificate, and the gRPC server on it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, Router};

use crate::contract::{self, Address};
use crate::log::{info, warning};

/// Where to listen, from the host's variables (docs/protocol.md, sections 2 and 4).
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
        own_dir: Option<PathBuf>,
    },
    Tcp(TcpListener),
}

impl Listener {
    /// Opens the listener `ILP_ADAPTOR_TRANSPORT` asks for. Without `PLUGIN_UNIX_SOCKET_DIR`
    /// a private directory of our own is made (and removed at exit); without the port range
    /// any free loopback port is used.
    pub fn open(getenv: impl Fn(&str) -> Option<String>) -> Result<Listener, String> {
        let transport = getenv(contract::ENV_TRANSPORT).unwrap_or_default();
        match transport.as_str() {
            "" | "unix" => {
                let (dir, own_dir) = match getenv(contract::ENV_UNIX_SOCKET_DIR)
                    .filter(|d| !d.is_empty())
                {
                    Some(dir) => (PathBuf::from(dir), None),
                    None => {
                        let dir = std::env::temp_dir()
                            .join(format!("simledger-rust-{}", std::process::id()));
                        std::fs::create_dir(&dir)
                            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
                        (dir.clone(), Some(dir))
                    }
                };
                let path = dir.join("adaptor.sock");
                if path.as_os_str().len() >= 100 {
                    return Err(format!(
                        "socket path {} is too long (100 bytes at most)",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path)
                    .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
                Ok(Listener::Unix {
                    listener,
                    path,
                    own_dir,
                })
            }
            "tcp" => {
                let port = |key| getenv(key).and_then(|p| p.parse::<u16>().ok());
                let (min, max) = match (port(contract::ENV_MIN_PORT), port(contract::ENV_MAX_PORT))
                {
                    (Some(min), Some(max)) if min <= max => (min, max),
                    _ => (0, 0),
                };
                for candidate in min..=max {
                    if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", candidate)) {
                        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
                        return TcpListener::from_std(listener)
                            .map(Listener::Tcp)
                            .map_err(|e| e.to_string());
                    }
                }
                Err(format!("no free port on 127.0.0.1 in {min}..={max}"))
            }
            other => Err(format!(
                "{}={other:?}: expected unix or tcp",
                contract::ENV_TRANSPORT
            )),
        }
    }

    pub fn address(&self) -> Result<Address, String> {
        match self {
            Listener::Unix { path, .. } => Ok(Address::Unix(path.display().to_string())),
            Listener::Tcp(listener) => listener
                .local_addr()
                .map(|a| Address::Tcp(a.to_string()))
                .map_err(|e| e.to_string()),
        }
    }

    /// Serves `router` on the listener (through TLS with `tls`) until `stop` resolves; then
    /// removes the socket (and our own directory).
    pub async fn serve(
        self,
        router: Router,
        tls: Option<Arc<ServerConfig>>,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        match self {
            Listener::Unix {
                listener,
                path,
                own_dir,
            } => {
                let incoming = UnixListenerStream::new(listener);
                let served = match tls {
                    Some(config) => {
                        router
                            .serve_with_incoming_shutdown(handshakes(incoming, config), stop)
                            .await
                    }
                    None => router.serve_with_incoming_shutdown(incoming, stop).await,
                };
                let _ = std::fs::remove_file(&path);
                if let Some(dir) = own_dir {
                    let _ = std::fs::remove_dir(dir);
                }
                served
            }
            Listener::Tcp(listener) => {
                let incoming = TcpListenerStream::new(listener);
                match tls {
                    Some(config) => {
                        router
                            .serve_with_incoming_shutdown(handshakes(incoming, config), stop)
                            .await
                    }
                    None => router.serve_with_incoming_shutdown(incoming, stop).await,
                }
            }
        }
    }
}

/// The TLS connections made of `incoming`: each handshake runs on its own task, so a slow or
/// refused client holds up nobody; a refused one is logged and dropped.
fn handshakes<S, IO>(
    mut incoming: S,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<TlsConnection<IO>>>
where
    S: Stream<Item = io::Result<IO>> + Unpin + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(connection) = incoming.next().await {
            let Ok(connection) = connection else { continue };
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match acceptor.accept(connection).await {
                    Ok(stream) => {
                        let _ = sender.send(Ok(TlsConnection(stream))).await;
                    }
                    Err(e) => warning!("TLS handshake refused", "error" => e),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// A TLS connection as tonic's server takes it.
pub struct TlsConnection<IO>(tokio_rustls::server::TlsStream<IO>);

impl<IO> Connected for TlsConnection<IO> {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConnection<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConnection<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Logged once serving starts.
pub fn announce(address: &Address, tls: bool) {
    let (network, addr) = match address {
        Address::Unix(path) => ("unix", path.clone()),
        Address::Tcp(addr) => ("tcp", addr.clone()),
    };
    info!("serving", "network" => network, "address" => addr, "mtls" => tls);
}
