//! A latency-injecting proxy in front of the local S3 server, so that benchmarks and tests
//! see the round trips of a cloud store: every call waits a latency drawn uniformly from a
//! range, then goes to the real server unchanged (method, path and query, every header).
//! It counts the calls and the most in flight at once, and can be paused (connections
//! refused, as when S3 is down) and resumed.
//!
//! A client must use [`S3Proxy::endpoint`] as its S3 endpoint: SigV4 signs the `Host` header,
//! which then names the proxy, and the proxy forwards it as it came.

use std::{
    convert::Infallible,
    net::SocketAddr,
    ops::RangeInclusive,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, Uri, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use rand::Rng;
use tokio::{
    net::{TcpListener, TcpSocket},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running proxy; stopped by [`S3Proxy::stop`] or when dropped.
pub struct S3Proxy {
    address: SocketAddr,
    forwarder: Arc<Forwarder>,
    serving: Mutex<Option<Serving>>,
}

/// The accept loop while the proxy takes connections.
struct Serving {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl S3Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` (e.g.
    /// `http://127.0.0.1:19000`) after a latency drawn from `latency` per call.
    pub async fn start(upstream: &str, latency: RangeInclusive<Duration>) -> anyhow::Result<Self> {
        let upstream: Uri = upstream.parse()?;
        anyhow::ensure!(
            upstream.scheme_str() == Some("http") && upstream.authority().is_some(),
            "the proxy forwards to an http:// endpoint, not `{upstream}`"
        );
        let listener = listen("127.0.0.1:0".parse()?)?;
        let forwarder = Arc::new(Forwarder {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            latency,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
        });
        let proxy = Self {
            address: listener.local_addr()?,
            forwarder,
            serving: Mutex::new(None),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// The endpoint clients use instead of the S3 server's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.forwarder.calls.load(Ordering::Relaxed)
    }

    /// The most calls in flight at once so far (from arrival to the answer handed back).
    pub fn max_in_flight(&self) -> usize {
        self.forwarder.max_in_flight.load(Ordering::Relaxed)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.forwarder.in_flight.load(Ordering::Relaxed)
    }

    /// Starts counting the most in flight afresh; returns the most seen until now.
    pub fn reset_max_in_flight(&self) -> usize {
        self.forwarder.max_in_flight.swap(
            self.forwarder.in_flight.load(Ordering::Relaxed),
            Ordering::Relaxed,
        )
    }

    /// Closes the listener and every open connection: clients get connection refused, as if
    /// S3 were down, until [`S3Proxy::resume`].
    pub fn pause(&self) {
        if let Some(serving) = self.serving.lock().expect("proxy state").take() {
            serving.stop.cancel();
        }
    }

    /// Listens again on the same address after [`S3Proxy::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        if self.serving.lock().expect("proxy state").is_none() {
            self.serve(listen(self.address)?);
        }
        Ok(())
    }

    /// Stops listening, drops every connection and waits for the accept loop to end.
    pub async fn stop(self) {
        let serving = self.serving.lock().expect("proxy state").take();
        if let Some(serving) = serving {
            serving.stop.cancel();
            let _ = serving.task.await;
        }
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, self.forwarder.clone(), stop.clone()));
        *self.serving.lock().expect("proxy state") = Some(Serving { stop, task });
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.pause();
    }
}

/// A listener that can be bound again on its port at once (`SO_REUSEADDR`).
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1_024)
}

/// Serves connections until `stop`, which also drops the connections still open.
async fn accept(listener: TcpListener, forwarder: Arc<Forwarder>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    eprintln!("s3 proxy: accept failed: {error}");
                    continue;
                }
            },
        };
        let (forwarder, stop) = (forwarder.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let forwarder = forwarder.clone();
                async move { forwarder.handle(request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

/// Forwards calls to the S3 server and counts them.
struct Forwarder {
    upstream: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    latency: RangeInclusive<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicU64,
}

impl Forwarder {
    async fn handle(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let _call = InFlight::enter(self);
        let latency = rand::rng().random_range(self.latency.clone());
        tokio::time::sleep(latency).await;
        Ok(self.forward(request).await.unwrap_or_else(|error| {
            let mut answer = Response::new(Full::new(Bytes::from(format!(
                "s3 proxy: the S3 server did not answer: {error}"
            ))));
            *answer.status_mut() = StatusCode::BAD_GATEWAY;
            answer
        }))
    }

    /// The call as it came (the `Host` header included), to the S3 server; its whole answer.
    async fn forward(&self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, BoxError> {
        let (mut head, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        head.uri = format!(
            "{}{}",
            self.upstream.to_string().trim_end_matches('/'),
            path
        )
        .parse()?;
        let answer = self
            .client
            .request(Request::from_parts(head, Full::new(body)))
            .await?;
        let (head, body) = answer.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response::from_parts(head, Full::new(body)))
    }
}

/// One call in flight, counted for as long as it lives.
struct InFlight<'a>(&'a Forwarder);

impl<'a> InFlight<'a> {
    fn enter(forwarder: &'a Forwarder) -> Self {
        forwarder.calls.fetch_add(1, Ordering::Relaxed);
        let now = forwarder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        forwarder.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(forwarder)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
