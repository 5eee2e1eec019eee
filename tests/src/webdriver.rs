//! A small W3C WebDriver client over the harness's own reqwest, for the
//! browser tests against Debian's chromedriver and Chromium.
//!
//! Why not thirtyfour: it turns on serde_json's `preserve_order` for the
//! whole workspace whenever the tests are built (feature unification), so
//! every service under test would order JSON maps and size `Value`
//! differently from the production build. A test must run the code that
//! ships; the dozen commands used here are plain JSON over HTTP.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::Path;

/// One browser session.
pub struct Session {
    http: reqwest::Client,
    base: String,
}

/// An element of the current page, by its WebDriver reference.
#[derive(Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Session {
    /// Opens a session at the chromedriver listening at `driver_url`.
    pub async fn new(driver_url: &str, capabilities: Value) -> anyhow::Result<Session> {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!("{driver_url}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": capabilities}}))
            .send()
            .await?
            .json()
            .await?;
        let id = r["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no session: {r}"))?;
        Ok(Session {
            http,
            base: format!("{driver_url}/session/{id}"),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await?.json().await?;
        if let Some(err) = r["value"]["error"].as_str() {
            bail!("webdriver {path}: {err}: {}", r["value"]["message"]);
        }
        Ok(r["value"].clone())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    pub async fn current_url(&self) -> anyhow::Result<reqwest::Url> {
        let v = self.get("/url").await?;
        Ok(reqwest::Url::parse(v.as_str().unwrap_or_default())?)
    }

    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self.get("/source").await?.as_str().unwrap_or_default().to_string())
    }

    /// The first element matching the CSS selector.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await?;
        let id = v[ELEMENT_KEY].as_str().context("no element reference")?;
        Ok(Element(id.to_string()))
    }

    pub async fn text(&self, e: &Element) -> anyhow::Result<String> {
        Ok(self
            .get(&format!("/element/{}/text", e.0))
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// An attribute as the page's markup has it (`href` resolved).
    pub async fn attr(&self, e: &Element, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .get(&format!("/element/{}/attribute/{name}", e.0))
            .await?
            .as_str()
            .map(str::to_string))
    }

    /// A DOM property (`value` of an input).
    pub async fn prop(&self, e: &Element, name: &str) -> anyhow::Result<Value> {
        self.get(&format!("/element/{}/property/{name}", e.0)).await
    }

    pub async fn displayed(&self, e: &Element) -> anyhow::Result<bool> {
        Ok(self
            .get(&format!("/element/{}/displayed", e.0))
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    pub async fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.post(&format!("/element/{}/click", e.0), json!({})).await.map(drop)
    }

    pub async fn clear(&self, e: &Element) -> anyhow::Result<()> {
        self.post(&format!("/element/{}/clear", e.0), json!({})).await.map(drop)
    }

    /// Types `text` into the element, as a keyboard would (`\u{E007}` is Enter).
    pub async fn send_keys(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .await
            .map(drop)
    }

    /// Runs `script` in the page; elements are passed as `arguments`.
    pub async fn execute(&self, script: &str, args: &[&Element]) -> anyhow::Result<Value> {
        let args: Vec<Value> = args.iter().map(|e| json!({ ELEMENT_KEY: e.0 })).collect();
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine;
        let v = self.get("/screenshot").await?;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
        std::fs::write(path, png)?;
        Ok(())
    }

    pub async fn quit(&self) -> anyhow::Result<()> {
        self.http.delete(&self.base).send().await?;
        Ok(())
    }
}
