//! Files across boxes through the listener: the token boxes fetch each other's files with,
//! and which box holds a shared file (see `bus::files`).

use super::super::keys::{FILE_PREFIX, TOKEN_KEY};
use super::super::Located;
use super::Listener;
use ::redis::aio::MultiplexedConnection;
use ::redis::RedisResult;
use std::sync::Arc;

impl Listener {
    /// Reads the token boxes fetch each other's files with (making it, if this is the first
    /// box).
    pub(super) async fn serve_files(
        &mut self,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<()> {
        let fresh = crate::session::hex(&crate::session::new_secret()[..16]);
        let (token,): (String,) = ::redis::pipe()
            .cmd("SET")
            .arg(TOKEN_KEY)
            .arg(fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(TOKEN_KEY)
            .query_async(data)
            .await?;
        *self.health.token.lock().expect("token lock") = Some(Arc::from(token));
        Ok(())
    }

    /// Where shared file `file` is held, and the token to fetch it with; `None` if no box
    /// holds it (or the token is not read yet).
    pub(super) async fn locate(
        &self,
        file: &str,
        data: &mut MultiplexedConnection,
    ) -> RedisResult<Option<Located>> {
        let url: Option<String> = ::redis::cmd("GET")
            .arg(format!("{FILE_PREFIX}{file}"))
            .query_async(data)
            .await?;
        Ok(url
            .zip(self.health.token())
            .map(|(url, token)| Located { url, token }))
    }
}
