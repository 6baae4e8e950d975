//! Webhook delivery from the outbox: every change committed with its record is POSTed to each
//! webhook URL, retried with backoff (1 s doubling to an hour) until it answers 2xx, for at most
//! [`MAX_ATTEMPTS`](crate::store::MAX_ATTEMPTS) tries. A restart resumes where it stopped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

use crate::probe::Prober;
use crate::store::MAX_ATTEMPTS;
use crate::App;

pub(crate) async fn send_loop(app: Arc<App>, prober: Arc<Prober>) {
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), app.outbox.notified()).await;
        let a = app.clone();
        let due = match tokio::task::spawn_blocking(move || a.store.due(crate::now(), 32)).await {
            Ok(Ok(due)) => due,
            _ => continue,
        };
        for (id, url, body, attempts) in due {
            let sent = send(&prober, &url, body).await;
            let a = app.clone();
            let now = crate::now();
            let _ = tokio::task::spawn_blocking(move || match sent {
                Ok(()) => a.store.delivered(id),
                Err(e) if attempts + 1 >= MAX_ATTEMPTS => {
                    tracing::warn!(%url, error = %e, attempts = attempts + 1, "webhook given up");
                    a.store.delivered(id)
                }
                Err(e) => {
                    tracing::info!(%url, error = %e, "webhook will be retried");
                    a.store.retry_at(id, now + (1u64 << attempts.min(12)).min(3600))
                }
            })
            .await;
        }
    }
}

async fn send(prober: &Prober, url: &str, body: String) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri.authority().ok_or("no host")?.clone();
    let https = uri.scheme_str() == Some("https");
    let address = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
    };
    let req = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("palisade-status/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let (status, _, _) =
        tokio::time::timeout(Duration::from_secs(10), prober.send(&address, https.then_some(authority.host()), req))
            .await
            .map_err(|_| "no answer within 10 s".to_string())??;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
