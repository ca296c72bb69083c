//! A native gRPC front: owns the public port, answers the inference methods by handing raw request bytes to
//! Python threads (`take` / `answer` / `fail`) and forwards every other call to the internal grpc.aio server.
//! See native/README.md, "The gRPC front".
mod budget;
mod calls;
mod grpc;
mod proxy;
mod serve;
mod tls;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Runtime;

use calls::{Calls, Reply};
use serve::{Limits, Server};

type Pem = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

#[pyclass(module = "dwcp_inference_native", frozen)]
pub struct Front {
    server: Arc<Server>,
    runtime: Mutex<Option<Runtime>>,
    #[pyo3(get)]
    port: u16,
}

#[pymethods]
impl Front {
    #[new]
    #[pyo3(signature = (host, port, methods, upstream_port, upstream_token, max_admitted, max_message_bytes,
                        max_streams, max_age_ms, max_age_grace_ms, reuse_port, tls=None, io_threads=1))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        methods: Vec<String>,
        upstream_port: u16,
        upstream_token: &str,
        max_admitted: usize,
        max_message_bytes: usize,
        max_streams: u32,
        max_age_ms: i64,
        max_age_grace_ms: i64,
        reuse_port: bool,
        tls: Option<Pem>,
        io_threads: usize,
    ) -> PyResult<Self> {
        let tls = match tls {
            Some((cert, key, ca)) => Some(RwLock::new(
                tls::config(&cert, &key, ca.as_deref()).map_err(PyValueError::new_err)?,
            )),
            None => None,
        };
        let server = Arc::new(Server {
            methods: methods
                .iter()
                .enumerate()
                .map(|(i, m)| (m.clone(), i))
                .collect::<HashMap<_, _>>(),
            names: methods
                .iter()
                .map(|m| m.rsplit('/').next().unwrap_or(m).to_owned())
                .collect(),
            max_admitted,
            limits: Limits {
                max_message_bytes,
                max_streams,
                max_age: (max_age_ms > 0).then(|| Duration::from_millis(max_age_ms as u64)),
                max_age_grace: Duration::from_millis(max_age_grace_ms.max(0) as u64),
            },
            calls: Calls::new(max_admitted),
            reading: budget::Budget::new(max_admitted, max_message_bytes),
            upstream: proxy::Upstream::new(upstream_port, upstream_token).map_err(PyValueError::new_err)?,
            tls,
            stopping: tokio::sync::watch::channel(false).0,
            connections: AtomicUsize::new(0),
        });
        py.detach(|| {
            let listener = listen(host, port, reuse_port)
                .map_err(|why| PyOSError::new_err(format!("cannot listen on {host}:{port}: {why}")))?;
            let port = listener.local_addr()?.port();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(io_threads.max(1))
                .thread_name("dwcp-front")
                .enable_all()
                .build()?;
            let listener = {
                let _entered = runtime.enter();
                tokio::net::TcpListener::from_std(listener)?
            };
            runtime.spawn(serve::accept(server.clone(), listener));
            Ok(Front {
                server,
                runtime: Mutex::new(Some(runtime)),
                port,
            })
        })
    }

    /// Up to `max_calls` queued calls: (call id, method index, request message, seconds left or None).
    fn take<'py>(
        &self,
        py: Python<'py>,
        max_calls: usize,
        timeout: f64,
    ) -> Vec<(u64, usize, Bound<'py, PyBytes>, Option<f64>)> {
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        let taken = py.detach(|| self.server.calls.take(max_calls, timeout));
        taken
            .into_iter()
            .map(|(id, method, request, left)| (id, method, PyBytes::new(py, &request), left))
            .collect()
    }

    fn answer(&self, call_id: u64, message: &[u8]) {
        self.server
            .calls
            .finish(call_id, Reply::Message(Bytes::copy_from_slice(message)));
    }

    fn fail(&self, call_id: u64, code: i32, message: String) {
        self.server.calls.finish(call_id, Reply::Status(code, message));
    }

    /// Since the previous call: (method index, status name, count) of calls the front answered itself.
    fn events(&self) -> Vec<(usize, &'static str, u64)> {
        self.server.calls.events()
    }

    /// A new certificate for the next handshakes; ValueError (keeping the current one) if it cannot serve.
    #[pyo3(signature = (cert, key, client_ca=None))]
    fn set_tls(&self, cert: Vec<u8>, key: Vec<u8>, client_ca: Option<Vec<u8>>) -> PyResult<()> {
        let Some(current) = &self.server.tls else {
            return Err(PyRuntimeError::new_err("the front was started without TLS"));
        };
        let config = tls::config(&cert, &key, client_ca.as_deref()).map_err(PyValueError::new_err)?;
        *current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    #[getter]
    fn admitted(&self) -> usize {
        self.server.calls.admitted()
    }

    /// GOAWAY on every connection, up to `grace` seconds for calls in flight, then everything closes.
    fn stop(&self, py: Python<'_>, grace: f64) {
        py.detach(|| self.shutdown(grace));
    }
}

impl Front {
    fn shutdown(&self, grace: f64) {
        let Some(runtime) = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        self.server.stopping.send_replace(true);
        let until = Instant::now() + Duration::try_from_secs_f64(grace.max(0.0)).unwrap_or(Duration::from_secs(3600));
        while self.server.connections.load(std::sync::atomic::Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.server.calls.stop();
        runtime.shutdown_background();
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.shutdown(0.0);
    }
}

fn listen(host: &str, port: u16, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let address = resolve(host, port)?;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() && address.ip().is_unspecified() {
        socket.set_only_v6(false)?; // "[::]" serves IPv4 too, as grpc does
    }
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let mut addresses: Vec<SocketAddr> = (bare, port).to_socket_addrs()?.collect();
    addresses.sort_by_key(|a| a.is_ipv6()); // "localhost": IPv4 first
    addresses
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the host resolves to no address"))
}
