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
    if let Some(rest) = url.strip_prefix("file://") {
        // file:///path or file://localhost/path, percent-encoded (RFC 8089)
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        if !rest.starts_with('/') {
            return Err(bad("a file:// URL needs an absolute path (file:///path), on this host".into()));
        }
        let path = &percent_decode(rest).ok_or_else(|| bad("a file:// URL with a bad %-escape".into()))?;
        let Some(dir) = &policy.dir else {
            return Err(ApiError::forbidden(format!("{at}: file:// URLs need the server started with --media-dir")));
        };
        let want = PathBuf::from(path);
        let outside = || ApiError::forbidden(format!("{at}: {path} is outside the media directory"));
        // symlinks resolved; a path that does not resolve is "not found" only when it is lexically inside the
        // directory, so the answer never tells whether a file exists elsewhere
        let real = match want.canonicalize() {
            Ok(r) => r,
            Err(e) => {
                let lexically_inside =
                    want.starts_with(dir) && !want.components().any(|c| matches!(c, std::path::Component::ParentDir));
                return Err(if lexically_inside { bad(format!("{path}: {e}")) } else { outside() });
            }
        };
        if !real.starts_with(dir) {
            return Err(outside());
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

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: Option<PathBuf>) -> MediaPolicy {
        MediaPolicy { dir, allow_remote: false, max_bytes: 100, remote_timeout: Duration::from_secs(1) }
    }

    #[test]
    fn data_urls_decode_and_bad_ones_name_the_field() {
        let p = policy(None);
        match fetch("data:image/png;base64,aGVsbG8=", &p, "f").unwrap() {
            ImageSource::Encoded { bytes, .. } => assert_eq!(bytes, b"hello"),
            _ => panic!("not encoded bytes"),
        }
        for (url, want) in [
            ("data:image/png;base64,@@@", "f: bad base64"),
            ("data:image/png,abc", "f: a data URL must be base64"),
            ("data:image/png;base64", "f: a data URL without a comma"),
            ("ftp://x/y.png", "f: an image URL is"),
        ] {
            let e = fetch(url, &p, "f").expect_err(url);
            assert!(e.message.starts_with(want), "{url}: {}", e.message);
            assert_eq!(e.status.as_u16(), 400);
        }
        // over the byte limit before decoding
        let big = format!("data:image/png;base64,{}", "A".repeat(400));
        assert!(fetch(&big, &p, "f").err().unwrap().message.contains("limit of 100"));
    }

    #[test]
    fn file_urls_stay_inside_the_media_dir() {
        let dir = std::env::temp_dir().join(format!("pixtral-media-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a b")).unwrap();
        std::fs::write(dir.join("a b/x.png"), b"png").unwrap();
        let dir = dir.canonicalize().unwrap();
        let p = policy(Some(dir.clone()));
        let url = format!("file://{}/a%20b/x.png", dir.display());
        assert!(matches!(fetch(&url, &p, "f"), Ok(ImageSource::Encoded { .. })));
        let outside = format!("file://{}/a%20b/../../", dir.display());
        assert_eq!(fetch(&outside, &p, "f").err().unwrap().status.as_u16(), 403);
        assert_eq!(fetch("file:///etc/hostname", &p, "f").err().unwrap().status.as_u16(), 403);
        // a missing file: "not found" inside, the same 403 as an existing file outside
        assert_eq!(fetch(&format!("file://{}/none.png", dir.display()), &p, "f").err().unwrap().status.as_u16(), 400);
        assert_eq!(fetch("file:///etc/no-such-file", &p, "f").err().unwrap().status.as_u16(), 403);
        assert_eq!(fetch("file:///etc/hostname", &policy(None), "f").err().unwrap().status.as_u16(), 403);
        assert_eq!(fetch("file://host/etc/hostname", &p, "f").err().unwrap().status.as_u16(), 400);
        assert_eq!(fetch("http://127.0.0.1:9/x.png", &p, "f").err().unwrap().status.as_u16(), 403);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
