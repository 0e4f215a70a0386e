//! Signing in and out: the form, the per-address rate of sign-ins, the passcode check with its
//! per-address lockout, and the
//! signed session cookie; `/session` tells the page whether its cookie still holds.

use super::i18n::{for_request, Strings};
use super::{html_response, peer_ip, plain, query, random_person, refuse, session, State};
use crate::message::{display_name, valid_room, ANONYMOUS};
use crate::session::Session;
use crate::stats::Refusal;
use askama::Template;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tide::{Request, Response, StatusCode};

/// Wrong passcodes from one address within the current window.
#[derive(Debug, Clone, Copy)]
pub struct Failures {
    count: u32,
    since: Instant,
}

/// Wrong passcodes allowed per address per [`FAILURE_WINDOW`] before it must wait.
const FAILURES_ALLOWED: u32 = 5;
/// The rate-limit window for wrong passcodes.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered for rate limiting before expired ones are swept out.
const FAILURE_TABLE: usize = 4096;

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    name: &'a str,
    next: &'a str,
    needs_passcode: bool,
    /// There are hosts: offer the host passcode even where chatting needs none.
    hosts: bool,
    error: Option<&'a str>,
    version: &'a str,
    /// The words, in the request's language.
    t: &'a Strings,
}

/// What the sign-in form posts.
#[derive(Deserialize)]
struct LoginForm {
    name: String,
    #[serde(default)]
    passcode: String,
    #[serde(default)]
    next: String,
}

/// Adds the sign-in routes.
pub(super) fn routes(app: &mut tide::Server<State>) {
    app.at("/login").get(login_page).post(login);
    app.at("/logout").post(logout);
    app.at("/session").get(whoami);
}

/// Where to go after signing in: the page asked for, if it is one of ours.
fn safe_next(next: &str) -> &str {
    match next.strip_prefix("/r/") {
        Some(room) if valid_room(room) || crate::dm::is_direct(room) => next,
        _ => "/",
    }
}

/// The sign-in page with `error` shown, answered with `status`.
pub(super) fn login_form(
    state: &State,
    t: &Strings,
    name: &str,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> tide::Result {
    let live = state.live.get();
    let html = LoginPage {
        name,
        next: safe_next(next),
        needs_passcode: live.passcode.is_some(),
        hosts: live.admin_passcode.is_some(),
        error,
        version: env!("CARGO_PKG_VERSION"),
        t,
    }
    .render()?;
    Ok(html_response(status, html))
}

async fn login_page(req: Request<State>) -> tide::Result {
    let next = query(&req, "next").unwrap_or_default();
    let name = session(&req).map(|s| s.name).unwrap_or_default();
    login_form(
        req.state(),
        for_request(&req),
        &name,
        &next,
        None,
        StatusCode::Ok,
    )
}

/// Checks the form (name, passcode with its rate limit), then sets the cookie and redirects.
async fn login(mut req: Request<State>) -> tide::Result {
    let t = for_request(&req);
    let form: LoginForm = match req.body_form().await {
        Ok(form) => form,
        Err(_) => return Ok(plain(StatusCode::BadRequest, "expected a sign-in form")),
    };
    let state = req.state().clone();
    let live = state.live.get();
    let ip = peer_ip(&req);
    let peer = req.peer_addr().unwrap_or("unknown");
    // Every sign-in counts, a name change too: each costs a signature and may start a fight
    // over a name in a room.
    if let Some(wait) = ip.and_then(|ip| state.sign_ins.try_count(ip).err()) {
        refuse(
            &state,
            Refusal::SignIn,
            peer,
            "sign-in: too many from its address",
        );
        let why = t.get("tooManySignIns");
        return try_again_later(&state, t, &form.name, &form.next, why, wait);
    }
    let name = match display_name(&form.name).and_then(not_reserved) {
        Ok(name) => name.to_owned(),
        Err(why) => {
            return login_form(
                &state,
                t,
                &form.name,
                &form.next,
                Some(t.get(why)),
                StatusCode::BadRequest,
            )
        }
    };
    let given = form.passcode.trim();
    // Whoever knows the admin passcode is a host, and passes the room's passcode too.
    let host = live
        .admin_passcode
        .as_deref()
        .is_some_and(|admin| same_secret(given, admin));
    // With hosts, a passcode given where none is needed is a try at the admin one, and counts.
    let expected = match (&live.passcode, &live.admin_passcode) {
        (Some(passcode), _) => Some(&**passcode),
        (None, Some(_)) if !given.is_empty() => Some(""),
        _ => None,
    };
    if let Some(passcode) = expected {
        if let Some(wait) = ip.and_then(|ip| locked_out(&state, ip)) {
            refuse(
                &state,
                Refusal::Passcode,
                peer,
                "sign-in: locked out after wrong passcodes",
            );
            let why = t.get("tooManyWrongPasscodes");
            return try_again_later(&state, t, &name, &form.next, why, wait);
        }
        if !host && !same_secret(given, passcode) {
            if let Some(ip) = ip {
                count_failure(&state, ip);
            }
            log::warn!("{peer}: wrong passcode");
            return login_form(
                &state,
                t,
                &name,
                &form.next,
                Some(t.get("wrongPasscode")),
                StatusCode::Unauthorized,
            );
        }
        if let Some(ip) = ip {
            state
                .login_failures
                .lock()
                .expect("failures lock")
                .remove(&ip);
        }
    }
    // The same browser keeps its person id when it changes its name.
    let previous = session(&req);
    if let Some(refusal) = super::banned_as(&req, previous.as_ref().map(|s| s.person), host) {
        return Ok(refusal);
    }
    let person = previous.map_or_else(random_person, |s| s.person);
    if host {
        log::info!("{peer}: {name} signed in as a host");
    }
    let cookie = live.sessions.issue(&Session { person, name, host });
    let mut res = Response::new(StatusCode::SeeOther);
    res.insert_header("Location", safe_next(&form.next));
    res.insert_header("Set-Cookie", cookie);
    Ok(res)
}

async fn logout(req: Request<State>) -> tide::Result {
    let mut res = Response::new(StatusCode::SeeOther);
    res.insert_header("Location", "/login");
    res.insert_header("Set-Cookie", req.state().live.get().sessions.clear());
    Ok(res)
}

/// The sign-in form answered `429`: `why`, and when to try again (also in `Retry-After`).
fn try_again_later(
    state: &State,
    t: &Strings,
    name: &str,
    next: &str,
    why: &str,
    wait: Duration,
) -> tide::Result {
    let seconds = wait.as_secs().max(1);
    let again = t
        .get("tryAgainIn")
        .replace("{seconds}", &seconds.to_string());
    let why = format!("{why} {again}");
    let mut res = login_form(
        state,
        t,
        name,
        next,
        Some(&why),
        StatusCode::TooManyRequests,
    )?;
    res.insert_header("Retry-After", seconds.to_string());
    Ok(res)
}

/// How long `ip` must still wait, if it has used up its wrong passcodes.
fn locked_out(state: &State, ip: IpAddr) -> Option<Duration> {
    let failures = state.login_failures.lock().expect("failures lock");
    let entry = failures.get(&ip)?;
    let elapsed = entry.since.elapsed();
    (entry.count >= FAILURES_ALLOWED && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
}

fn count_failure(state: &State, ip: IpAddr) {
    let mut failures = state.login_failures.lock().expect("failures lock");
    if failures.len() >= FAILURE_TABLE {
        failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
    }
    let now = Instant::now();
    let entry = failures.entry(ip).or_insert(Failures {
        count: 0,
        since: now,
    });
    if entry.since.elapsed() >= FAILURE_WINDOW {
        *entry = Failures {
            count: 0,
            since: now,
        };
    }
    entry.count += 1;
}

/// Refuses `anonymous` and `anonymous-N`: the room gives those to clients that name nobody,
/// and a person signed in under one would be renamed in the room behind their page's back.
fn not_reserved(name: &str) -> Result<&str, &'static str> {
    let lower = name.to_ascii_lowercase();
    let numbered = lower
        .strip_prefix(ANONYMOUS)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if lower == ANONYMOUS || numbered {
        Err("that name is kept for people who give none")
    } else {
        Ok(name)
    }
}

/// Compares without an early exit, so timing tells nothing about how much of a guess was right.
fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut difference = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(i).copied().unwrap_or(0));
    }
    difference == 0
}

/// Lets the page find out whether its session still holds (after a refused WebSocket).
async fn whoami(req: Request<State>) -> tide::Result {
    let mut res = match session(&req) {
        Some(session) => {
            let mut res = Response::new(StatusCode::Ok);
            res.set_body(tide::Body::from_json(
                &serde_json::json!({ "name": session.name }),
            )?);
            res
        }
        None => plain(StatusCode::Unauthorized, "not signed in"),
    };
    res.insert_header("Cache-Control", "no-store");
    Ok(res)
}
