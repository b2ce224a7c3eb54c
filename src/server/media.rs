//! Where an `image_url` may point: a `data:` URL (base64) always; `file://` only inside `--media-dir`; `http(s)://`
//! only with `--allow-remote-media`, within a size and a time limit. Each becomes an
//! [`ImageSource::Encoded`] named by where it came from, then goes through the same header checks as any image.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use crate::runtime::request::ImageSource;
use crate::server::api::ApiError;

/// What `image_url`s may reach.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// `file://` URLs must resolve inside it (after symlinks); `None`: no `file://` at all.
    pub dir: Option<PathBuf>,
    pub allow_remote: bool,
    /// Bytes of one image, whatever its source.
    pub max_bytes: usize,
    /// Time to fetch one remote image, connection included.
    pub remote_timeout: Duration,
}

/// The image at `url`; `at` names the field in errors (`messages[0].content[1].image_url.url`).
pub fn fetch(url: &str, policy: &MediaPolicy, at: &str) -> Result<ImageSource, ApiError> {
    let bad = |msg: String| ApiError::bad_request(format!("{at}: {msg}"));
    let too_big = |n: usize| {
        ApiError::bad_request(format!("{at}: the image has {n} bytes, more than the limit of {}", policy.max_bytes))
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| bad("a data URL without a comma".into()))?;
        if !meta.ends_with(";base64") {
            return Err(bad("a data URL must be base64 (data:image/png;base64,...)".into()));
        }
        // 3 bytes per 4 characters: refuse before decoding
        if data.len() / 4 * 3 > policy.max_bytes {
            return Err(too_big(data.len() / 4 * 3));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim_end())
            .map_err(|e| bad(format!("bad base64: {e}")))?;
        return Ok(ImageSource::Encoded { name: format!("{at} (data URL)"), bytes });
    }
    if let Some(path) = url.strip_prefix("file://") {
        let Some(dir) = &policy.dir else {
            return Err(ApiError::forbidden(format!("{at}: file:// URLs need the server started with --media-dir")));
        };
        let want = PathBuf::from(path);
        let real = want.canonicalize().map_err(|e| bad(format!("{path}: {e}")))?;
        if !real.starts_with(dir) {
            return Err(ApiError::forbidden(format!("{at}: {path} is outside the media directory")));
        }
        let meta = std::fs::metadata(&real).map_err(|e| bad(format!("{path}: {e}")))?;
        if meta.len() > policy.max_bytes as u64 {
            return Err(too_big(meta.len() as usize));
        }
        let bytes = std::fs::read(&real).map_err(|e| bad(format!("{path}: {e}")))?;
        return Ok(ImageSource::Encoded { name: path.to_string(), bytes });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        if !policy.allow_remote {
            return Err(ApiError::forbidden(format!(
                "{at}: remote images need the server started with --allow-remote-media (or send a data: URL)"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(policy.remote_timeout))
            .max_redirects(3)
            .build()
            .new_agent();
        let resp = agent.get(url).call().map_err(|e| bad(format!("fetching {url}: {e}")))?;
        let mut bytes = Vec::new();
        let limit = policy.max_bytes as u64 + 1;
        resp.into_body()
            .into_reader()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("reading {url}: {e}")))?;
        if bytes.len() > policy.max_bytes {
            return Err(too_big(bytes.len()));
        }
        return Ok(ImageSource::Encoded { name: url.to_string(), bytes });
    }
    Err(bad("an image URL is data:, file:// or http(s)://".into()))
}
