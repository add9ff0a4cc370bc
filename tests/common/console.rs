//! A browser without JavaScript for the web console's pages: sign-in, the session cookie,
//! forms with the CSRF token.

use super::TestApp;

/// Form bodies (reqwest's `form` feature is not enabled).
pub trait FormData {
    fn form_data<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
}

impl FormData for reqwest::RequestBuilder {
    fn form_data<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k.as_ref(), v.as_ref());
        }
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(ser.finish())
    }
}

/// A browser without JavaScript: keeps the session cookie, does not follow redirects.
pub struct Browser<'a> {
    pub app: &'a TestApp,
    pub client: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of `name` in the response's `Set-Cookie` headers, with the whole header.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v[name.len() + 1..].split(';').next().unwrap().to_string();
            (value, v.to_string())
        })
}

/// The value of the first `name="_csrf" value="…"` in a page.
pub fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a CSRF field");
    let rest = &html[at + "name=\"_csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Opens the sign-in form: (its one-time token, the `de_signin` cookie).
pub async fn signin_form(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let r = client.get(app.url("/signin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (cookie, _) = set_cookie(&r, "de_signin").expect("sign-in cookie");
    let html = r.text().await.unwrap();
    (csrf_in(&html), cookie)
}

pub async fn try_signin(
    app: &TestApp,
    client: &reqwest::Client,
    credential: &str,
) -> reqwest::Response {
    let (token, cookie) = signin_form(app, client).await;
    client
        .post(app.url("/signin"))
        .header("cookie", format!("de_signin={cookie}"))
        .form_data(&[("_csrf", token.as_str()), ("credential", credential)])
        .send()
        .await
        .unwrap()
}

impl<'a> Browser<'a> {
    pub async fn signin(app: &'a TestApp, credential: &str) -> Browser<'a> {
        let client = no_redirects();
        let r = try_signin(app, &client, credential).await;
        assert_eq!(r.status(), 303, "sign-in answers a redirect");
        assert_eq!(r.headers()["location"], "/");
        let (cookie, _) = set_cookie(&r, "de_session").expect("session cookie");
        let mut b = Browser {
            app,
            client,
            cookie,
            csrf: String::new(),
        };
        let (status, html) = b.get("/").await;
        assert_eq!(status, 200, "{html}");
        b.csrf = csrf_in(&html);
        b
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.app.url(path))
            .header("cookie", format!("de_session={}", self.cookie))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Posts a form with the session's CSRF token.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut f: Vec<(&str, &str)> = vec![("_csrf", self.csrf.as_str())];
        f.extend_from_slice(form);
        self.post_raw(path, &f).await
    }

    /// Posts a form as given (no token added).
    pub async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.app.url(path))
            .header("cookie", format!("de_session={}", self.cookie))
            .form_data(form)
            .send()
            .await
            .unwrap()
    }
}
