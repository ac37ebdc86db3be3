//! A small client of the gateway's REST API, as a backend team would call it.

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::JWT_SECRET;

/// The gateway at `base_url` (e.g. `http://127.0.0.1:8080`).
#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub client: Client,
    secret: String,
}

/// A status and the JSON body.
pub type Answer = (StatusCode, Value);

async fn answer(response: Response) -> Answer {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

impl Api {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            // Shorter than the server's 5 s keep-alive, so a pooled connection the server has
            // closed is never reused.
            client: Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("HTTP client"),
            secret: JWT_SECRET.to_owned(),
        }
    }

    /// Signs member tokens with `secret` instead of the tests' one.
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_owned();
        self
    }

    fn token(&self, member: &str) -> String {
        gateway::auth::issue_token(&self.secret, member, &[], 3600)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn like(&self, namespace: &str, entity: &str, member: &str) -> Answer {
        let url = self.url(&format!("/v1/counters/{namespace}/{entity}/members/me"));
        answer(
            self.client
                .put(url)
                .bearer_auth(self.token(member))
                .send()
                .await
                .expect("PUT like"),
        )
        .await
    }

    pub async fn unlike(&self, namespace: &str, entity: &str, member: &str) -> Answer {
        let url = self.url(&format!("/v1/counters/{namespace}/{entity}/members/me"));
        answer(
            self.client
                .delete(url)
                .bearer_auth(self.token(member))
                .send()
                .await
                .expect("DELETE like"),
        )
        .await
    }

    pub async fn increment(
        &self,
        namespace: &str,
        entity: &str,
        delta: i64,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let url = self.url(&format!("/v1/counters/{namespace}/{entity}/increments"));
        let mut request = self.client.post(url).json(&json!({ "delta": delta }));
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        answer(request.send().await.expect("POST increment")).await
    }

    /// `POST /v1/writes/{sink}` as `member`.
    pub async fn write(&self, sink: &str, member: &str, row: &Value) -> Answer {
        let url = self.url(&format!("/v1/writes/{sink}"));
        answer(
            self.client
                .post(url)
                .bearer_auth(self.token(member))
                .json(row)
                .send()
                .await
                .expect("POST write"),
        )
        .await
    }

    /// `GET /v1/writes/{sink}/{id}` without a token (a `public` sink).
    pub async fn read_write(&self, sink: &str, id: &str) -> Answer {
        let url = self.url(&format!("/v1/writes/{sink}/{id}"));
        answer(self.client.get(url).send().await.expect("GET write")).await
    }

    /// `GET /v1/writes/{sink}/{id}` as `member` (a `member` sink shows it its own rows).
    pub async fn read_write_as(&self, sink: &str, id: &str, member: &str) -> Answer {
        let url = self.url(&format!("/v1/writes/{sink}/{id}"));
        let request = self.client.get(url).bearer_auth(self.token(member));
        answer(request.send().await.expect("GET write")).await
    }

    /// A member token signed with this client's secret.
    pub fn member_token(&self, member: &str) -> String {
        self.token(member)
    }

    pub async fn get(&self, namespace: &str, entity: &str, member: Option<&str>) -> Answer {
        let url = self.url(&format!("/v1/counters/{namespace}/{entity}"));
        let mut request = self.client.get(url);
        if let Some(member) = member {
            request = request.bearer_auth(self.token(member));
        }
        answer(request.send().await.expect("GET counter")).await
    }

    /// The counter's value as the API reports it.
    pub async fn value(&self, namespace: &str, entity: &str) -> i64 {
        let (status, body) = self.get(namespace, entity, None).await;
        assert_eq!(status, 200, "{body}");
        body["value"].as_i64().expect("value")
    }

    /// `PUT /v1/templates/{id}` with a token holding `templates:write`.
    pub async fn register_template(&self, id: &str, objects: &[String], capacity: i64) -> Answer {
        let url = self.url(&format!("/v1/templates/{id}"));
        let token = gateway::auth::issue_token(&self.secret, "ops", &["templates:write"], 3600);
        let body = json!({ "objects": objects, "pool_capacity": capacity });
        answer(
            self.client
                .put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("PUT template"),
        )
        .await
    }

    /// `POST /v1/templates/{id}/copies` as `member`.
    pub async fn take_copy(&self, id: &str, member: &str) -> Answer {
        let url = self.url(&format!("/v1/templates/{id}/copies"));
        answer(
            self.client
                .post(url)
                .bearer_auth(self.token(member))
                .send()
                .await
                .expect("POST copy"),
        )
        .await
    }

    /// `GET /v1/templates/{id}/pool`: (ready, capacity).
    pub async fn pool(&self, id: &str) -> (i64, i64) {
        let url = self.url(&format!("/v1/templates/{id}/pool"));
        let (status, body) = answer(self.client.get(url).send().await.expect("GET pool")).await;
        assert_eq!(status, 200, "{body}");
        (
            body["ready"].as_i64().unwrap(),
            body["capacity"].as_i64().unwrap(),
        )
    }

    /// Waits until the pool of template `id` holds `ready` copies; panics after `timeout`.
    pub async fn wait_for_pool(&self, id: &str, ready: i64, timeout: std::time::Duration) {
        crate::eventually(&format!("the pool of {id} at {ready}"), timeout, || async {
            (self.pool(id).await.0 == ready).then_some(())
        })
        .await;
    }

    /// `POST /v1/queues/{queue}/tokens` as `member`.
    pub async fn join_queue(&self, queue: &str, member: &str) -> Answer {
        let url = self.url(&format!("/v1/queues/{queue}/tokens"));
        let request = self.client.post(url).bearer_auth(self.token(member));
        answer(request.send().await.expect("POST queue token")).await
    }

    /// `GET /v1/queues/{queue}/tokens/{token}` as `member` (a heartbeat).
    pub async fn poll_queue(&self, queue: &str, token: &str, member: &str) -> Answer {
        let url = self.url(&format!("/v1/queues/{queue}/tokens/{token}"));
        let request = self.client.get(url).bearer_auth(self.token(member));
        answer(request.send().await.expect("GET queue token")).await
    }

    /// `DELETE /v1/queues/{queue}/tokens/{token}` as `member`.
    pub async fn leave_queue(&self, queue: &str, token: &str, member: &str) -> StatusCode {
        let url = self.url(&format!("/v1/queues/{queue}/tokens/{token}"));
        let request = self.client.delete(url).bearer_auth(self.token(member));
        request.send().await.expect("DELETE queue token").status()
    }
}
