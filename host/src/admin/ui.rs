//! The dashboard: three static files embedded in the binary, served without the
//! token (they hold no data; the page asks for the token and sends it with each call
//! to the control API) and with a policy that lets them load nothing from elsewhere.

use crate::http::response::Response;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Whether `path` is one of the dashboard's files (or the root, which leads there).
pub(crate) fn is_static(path: &str) -> bool {
    matches!(
        path,
        "/" | "/ui" | "/ui/" | "/ui/index.html" | "/ui/app.js" | "/ui/app.css"
    )
}

/// The file at `path` (one of [`is_static`]'s).
pub(crate) fn serve(method: &str, path: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        let mut r = Response::error(405, "");
        r.headers.push(("Allow".into(), "GET, HEAD".into()));
        return r;
    }
    let (content_type, body) = match path {
        "/" | "/ui" => {
            return Response {
                status: 302,
                reason: None,
                headers: vec![("Location".into(), "/ui/".into())],
                body: Vec::new(),
                close: true,
            };
        }
        "/ui/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/ui/app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => ("text/html; charset=utf-8", INDEX),
    };
    Response {
        status: 200,
        reason: None,
        headers: vec![
            ("Content-Type".into(), content_type.into()),
            (
                "Content-Security-Policy".into(),
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'".into(),
            ),
            ("X-Content-Type-Options".into(), "nosniff".into()),
            ("Referrer-Policy".into(), "no-referrer".into()),
            ("Cache-Control".into(), "no-cache".into()),
        ],
        body: body.as_bytes().to_vec(),
        close: true,
    }
}
