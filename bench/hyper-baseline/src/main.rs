//! The smallest hyper reverse proxy worth measuring: one current-thread runtime per core on
//! SO_REUSEPORT listeners, hyper-util's pooled client, no checks, no headers, no metrics.
//! `hyper-baseline LISTEN ORIGIN [THREADS]`. It is the ceiling of the stack palisade is built on,
//! so palisade/baseline shows palisade's own overhead and baseline/nginx the stack's.
use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect("LISTEN address");
    let origin: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect("ORIGIN address");
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(serve(listen, origin));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

async fn serve(listen: SocketAddr, origin: SocketAddr) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_reuseport(true).expect("reuseport");
    sock.set_reuseaddr(true).expect("reuseaddr");
    sock.bind(listen).expect("bind");
    let listener = sock.listen(4096).expect("listen");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    *req.uri_mut() = format!("http://{origin}{pq}").parse().unwrap_or_default();
                    let resp = match client.request(req).await {
                        Ok(r) => r.map(http_body_util_either::Left),
                        Err(_) => {
                            let mut r = Response::new(http_body_util_either::Either::Right(String::new()));
                            *r.status_mut() = StatusCode::BAD_GATEWAY;
                            r
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// A two-way body without another dependency.
mod http_body_util_either {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::{Body, Bytes, Frame, Incoming};

    pub enum Either {
        Left(Incoming),
        Right(String),
    }

    #[allow(non_snake_case)]
    pub fn Left(b: Incoming) -> Either {
        Either::Left(b)
    }

    impl Body for Either {
        type Data = Bytes;
        type Error = hyper::Error;
        fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
            match self.get_mut() {
                Either::Left(b) => Pin::new(b).poll_frame(cx),
                Either::Right(s) => {
                    let s = std::mem::take(s);
                    Poll::Ready((!s.is_empty()).then(|| Ok(Frame::data(Bytes::from(s)))))
                }
            }
        }
    }
}
