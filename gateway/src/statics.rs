//! Files served at `/app/` from `static_dir` (development: the TypeScript
//! client's example page). Small on purpose: GET only, files read whole up
//! to [`MAX_FILE_BYTES`], no directory listings, nothing outside the
//! directory (no `..`, no hidden files, no symlinks that lead out).

use std::path::{Component, Path, PathBuf};

use crate::http::{RequestHead, Response};

/// The path the directory is served at.
pub(crate) const PREFIX: &str = "/app";
/// [`PREFIX`] with its slash: what file paths start with.
pub(crate) const PREFIX_SLASH: &str = "/app/";
/// The largest file served (an answer is held in memory until written).
const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// The answer to a request under [`PREFIX`].
pub(crate) fn serve(dir: &Path, head: &RequestHead<'_>) -> Response {
    if head.method != "GET" {
        return Response::error(405, "method_not_allowed", "static files are served to GET").with_header("Allow: GET");
    }
    let Some(rest) = head.path.strip_prefix(PREFIX_SLASH) else {
        // `/app`: relative links in the page need the slash.
        return Response::empty(301).with_header("Location: /app/");
    };
    let Some(path) = resolve(dir, rest) else {
        return not_found();
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return not_found();
    };
    if !meta.is_file() {
        return not_found();
    }
    if meta.len() > MAX_FILE_BYTES {
        return Response::error(413, "too_large", "file larger than static files may be");
    }
    match std::fs::read(&path) {
        Ok(body) => Response::text(200, content_type(&path), body),
        Err(_) => not_found(),
    }
}

fn not_found() -> Response {
    Response::error(404, "not_found", "no such file")
}

/// The file `rest` (the path after the prefix, percent-encoded) names
/// inside `dir`, if it names one there; `index.html` for a directory.
fn resolve(dir: &Path, rest: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8().ok()?;
    if decoded.contains(['\\', '\0']) {
        return None;
    }
    let mut path = dir.to_path_buf();
    for part in Path::new(decoded.as_ref()).components() {
        match part {
            Component::Normal(p) if !p.to_string_lossy().starts_with('.') => path.push(p),
            _ => return None,
        }
    }
    if decoded.is_empty() || decoded.ends_with('/') {
        path.push("index.html");
    }
    // A symlink inside may point anywhere: what it resolves to must still
    // be inside.
    let real = path.canonicalize().ok()?;
    let root = dir.canonicalize().ok()?;
    real.starts_with(&root).then_some(real)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn get(dir: &Path, target: &str, method: &str) -> Response {
        let req = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
        let head = parse_head(req.as_bytes()).unwrap().unwrap();
        serve(dir, &head)
    }

    #[test]
    fn files_inside_are_served_and_nothing_outside() {
        let base = std::env::temp_dir().join(format!("herald-statics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("site");
        std::fs::create_dir_all(dir.join("js")).unwrap();
        std::fs::write(dir.join("index.html"), "<p>hi</p>").unwrap();
        std::fs::write(dir.join("js/app.js"), "let a = 1;").unwrap();
        std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
        std::fs::write(base.join("secret.txt"), "outside").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(base.join("secret.txt"), dir.join("link.txt")).unwrap();

        let r = get(&dir, "/app/", "GET");
        assert_eq!((r.status, r.content_type), (200, "text/html; charset=utf-8"));
        assert_eq!(r.body, b"<p>hi</p>");
        let r = get(&dir, "/app/js/app.js", "GET");
        assert_eq!((r.status, r.content_type), (200, "text/javascript; charset=utf-8"));
        assert_eq!(get(&dir, "/app", "GET").status, 301);
        for bad in [
            "/app/../secret.txt",
            "/app/%2e%2e/secret.txt",
            "/app/js/..%2F..%2Fsecret.txt",
            "/app/.env",
            "/app/link.txt",
            "/app/%2Fetc%2Fpasswd",
            "/app/js",
            "/app/missing.html",
            "/app/a%00b",
            "/app/%ff",
        ] {
            let r = get(&dir, bad, "GET");
            assert_eq!(r.status, 404, "{bad}");
            assert!(!String::from_utf8_lossy(&r.body).contains("outside"), "{bad}");
        }
        assert_eq!(get(&dir, "/app/index.html", "POST").status, 405);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
