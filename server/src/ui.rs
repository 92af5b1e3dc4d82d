//! The review page of the Comités de Vigilancia: three static files (`ui/index.html`,
//! `ui/app.js`, `ui/app.css`) compiled into the binary and served at `/`, `/app.js` and
//! `/app.css`. The page needs no token to load; it asks for one and sends it with every call to
//! the review API (`/api/v1`). Nothing is loaded from elsewhere, so it works offline, and a
//! strict Content-Security-Policy forbids inline scripts and styles and any other origin.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// Only this origin's files and API; no inline script or style; never inside a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self'; \
     img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// Registers `GET`/`HEAD` for `/`, `/app.js` and `/app.css`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/", web::head().to(index))
        .route("/app.js", web::get().to(app_js))
        .route("/app.js", web::head().to(app_js))
        .route("/app.css", web::get().to(app_css))
        .route("/app.css", web::head().to(app_css));
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// A static file with the page's security headers. `no-cache`: the browser revalidates, so a
/// new binary's page is used at once.
fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as web_test, App};

    #[actix_web::test]
    async fn serves_the_three_files_with_strict_headers() {
        let app = web_test::init_service(App::new().configure(configure)).await;
        for (path, ctype, body) in [
            ("/", "text/html; charset=utf-8", INDEX_HTML),
            ("/app.js", "text/javascript; charset=utf-8", APP_JS),
            ("/app.css", "text/css; charset=utf-8", APP_CSS),
        ] {
            let res =
                web_test::call_service(&app, web_test::TestRequest::get().uri(path).to_request())
                    .await;
            assert_eq!(res.status(), 200, "{path}");
            let h = res.headers();
            assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), ctype, "{path}");
            assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-cache", "{path}");
            assert_eq!(
                h.get(header::CONTENT_SECURITY_POLICY).unwrap(),
                CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(web_test::read_body(res).await, body.as_bytes(), "{path}");
        }
    }

    #[test]
    fn the_first_load_stays_small() {
        let total = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();
        assert!(total < 150 * 1024, "the page weighs {total} bytes");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_nothing_inline() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            assert!(!text.contains("http://"), "{name} names another origin");
            assert!(!text.contains("https://"), "{name} names another origin");
        }
        assert!(!INDEX_HTML.contains("style="), "inline style in index.html");
        assert!(!INDEX_HTML.contains("<style"), "inline style in index.html");
        assert!(!APP_JS.contains("innerHTML"), "app.js must not write HTML");
    }
}
