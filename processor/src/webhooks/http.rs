//! One webhook request: connect to an address that passed the SSRF check (TLS for
//! https, verified against the web PKI roots), POST the body, read the status, the
//! `Retry-After` header and a bounded excerpt of the answer. No redirects are followed
//! (a 3xx is a failed attempt), no connection is reused, and the whole exchange has one
//! deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::target::Target;

/// Bytes of the answer kept with the attempt.
pub const EXCERPT_BYTES: usize = 1024;

/// What the receiver answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub excerpt: String,
}

/// Why no answer came. The texts are recorded with the attempt (operators see them).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {}", plain(.0))]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {}", plain(.0))]
    Tls(std::io::Error),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("could not build the request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// An I/O error as an endpoint's owner reads it: "Connection refused", without the
/// operating system's error number ("(os error 111)") that `io::Error` adds.
fn plain(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// The TLS set-up, built once per process.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        // The ring provider supports the default protocol versions.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// POSTs `body` with `headers` to `target` at `address`, within `timeout`.
    pub async fn post(
        &self,
        target: &Target,
        address: SocketAddr,
        headers: &[(&str, String)],
        body: String,
        timeout: Duration,
    ) -> Result<Answer, RequestError> {
        tokio::time::timeout(timeout, self.exchange(target, address, headers, body))
            .await
            .map_err(|_| RequestError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        target: &Target,
        address: SocketAddr,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<Answer, RequestError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(RequestError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if target.https {
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    RequestError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                })?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(RequestError::Tls)?;
            send(TokioIo::new(tls), target, headers, body).await
        } else {
            send(TokioIo::new(tcp), target, headers, body).await
        }
    }
}

async fn send<IO>(
    io: IO,
    target: &Target,
    headers: &[(&str, String)],
    body: String,
) -> Result<Answer, RequestError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(connection);
    let path = match target.url.query() {
        Some(query) => format!("{}?{query}", target.url.path()),
        None => target.url.path().to_owned(),
    };
    let host = match target.url.port() {
        Some(port) => format!("{}:{port}", target.url.host_str().unwrap_or(&target.host)),
        None => target.url.host_str().unwrap_or(&target.host).to_owned(),
    };
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "Aula-Webhooks/1")
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut excerpt = Vec::new();
    let mut body = response.into_body();
    while excerpt.len() < EXCERPT_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = EXCERPT_BYTES - excerpt.len();
                    excerpt.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    driver.abort();
    Ok(Answer {
        status,
        retry_after,
        excerpt: truncate_utf8(&excerpt),
    })
}

/// `Retry-After` in seconds (the HTTP-date form is read as "no hint").
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The excerpt as text, cut at a character boundary, at most [`EXCERPT_BYTES`] bytes.
fn truncate_utf8(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_error_reads_without_the_os_error_number() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(
            RequestError::Connect(refused).to_string(),
            "could not connect: Connection refused"
        );
        let other = std::io::Error::other("no route");
        assert_eq!(
            RequestError::Tls(other).to_string(),
            "TLS handshake failed: no route"
        );
    }
}
