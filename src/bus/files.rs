//! Files across boxes: a file shared in a shared room stays on the box it was uploaded to, and
//! the other boxes serve it by fetching it from there when someone asks for it.
//!
//! The posting script records which box holds each shared file, by the URL the other boxes
//! reach it at (`keys::FILE_PREFIX`, for as long as files are kept): a box that is down has
//! its files unavailable until it is back at that address. Boxes fetch from each other with a
//! token every box reads from Redis (`keys::TOKEN_KEY`), so a box whose chat needs a passcode
//! serves its files to the other boxes without a session.
//!
//! The URL a box gives: its own address if it listens on one, else the address it reaches
//! Redis from (the boxes reach Redis over the same network as each other), with its port.

use super::orders::Command;
use super::{Bus, Health};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

/// Where a file kept on another box is fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The holding box's URL, `http://address:port`.
    pub url: String,
    /// What the holding box asks of other boxes (header [`BOX_TOKEN_HEADER`]).
    pub token: Arc<str>,
}

/// The header a box fetching another's file sends its token in.
pub const BOX_TOKEN_HEADER: &str = "X-Smolchat-Box";

/// The URL other boxes reach a box listening on `listen` at, given the Redis it uses at
/// `redis_host`:`redis_port`.
pub fn box_url(listen: SocketAddr, redis_host: &str, redis_port: u16) -> String {
    let ip = if listen.ip().is_unspecified() {
        outward_ip(redis_host, redis_port).unwrap_or(IpAddr::from([127, 0, 0, 1]))
    } else {
        listen.ip()
    };
    match ip {
        IpAddr::V4(ip) => format!("http://{ip}:{}", listen.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}", listen.port()),
    }
}

/// The address this machine sends from to reach `host`:`port`: a UDP socket connected there
/// (nothing is sent) names the interface the routing table picks.
fn outward_ip(host: &str, port: u16) -> Option<IpAddr> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect((host, port)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

impl Bus {
    /// Which box holds shared file `id`, and how to fetch it from there; `None` without
    /// Redis, while Redis is away, or if no live box holds it.
    pub async fn locate(&self, id: &str) -> Option<Located> {
        let Bus::Redis(redis) = self else {
            return None;
        };
        let (reply, answer) = async_channel::bounded(1);
        let locate = Command::Locate {
            file: id.to_owned(),
            reply,
        };
        redis.listen.try_send(locate).ok()?;
        answer.recv().await.ok().flatten()
    }

    /// Whether `token` is the boxes' token (a box fetching a file of this one).
    pub fn is_box_token(&self, token: &str) -> bool {
        let Bus::Redis(redis) = self else {
            return false;
        };
        Health::token(&redis.health).is_some_and(|ours| *ours == *token)
    }
}

impl Health {
    /// The boxes' token, once read from Redis.
    pub fn token(&self) -> Option<Arc<str>> {
        self.token.lock().expect("token lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_gives_its_own_address_or_the_one_it_reaches_redis_from() {
        let fixed: SocketAddr = "192.168.1.20:8080".parse().unwrap();
        assert_eq!(box_url(fixed, "10.0.0.1", 6379), "http://192.168.1.20:8080");
        let wildcard: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            box_url(wildcard, "127.0.0.1", 6379),
            "http://127.0.0.1:8080"
        );
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(box_url(v6, "127.0.0.1", 6379), "http://[fd00::1]:80");
    }
}
