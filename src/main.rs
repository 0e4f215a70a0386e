//! The `smolchat` binary: flags to config, logging, bind, serve until SIGINT or SIGTERM.
//!
//! Run it with `cargo run --release` (serves http://0.0.0.0:8080); `smolchat --help` lists the
//! options.

#![forbid(unsafe_code)]

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;
use smolchat::config::{self, Command, HELP};
use smolchat::Server;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Exit code for bad flags or configuration.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let config = match config::from_env() {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("smolchat {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::SelfTest) => {
            return match smolchat::loadgen::self_test() {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("smolchat: self-test failed: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Err(error) => {
            eprintln!("smolchat: {error} (see smolchat --help)");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .format(|out, record| writeln!(out, "{:<5} {}", record.level(), record.args()))
        .init();

    // Register for signals before serving, so an early SIGTERM is not lost.
    let mut signals = match Signals::new([Signal::Term, Signal::Int]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("smolchat: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match std::net::TcpListener::bind(config.addr) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("smolchat: cannot listen on {}: {error}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(listener, &config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("smolchat: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "smolchat {} listening on http://{} ({} threads)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        config.threads
    );
    for url in server.urls() {
        log::info!("reachable at {url}/");
    }
    show_invite_qr(server.urls());

    smol::block_on(async {
        if let Some(Ok(signal)) = signals.next().await {
            log::info!("received {signal:?}, shutting down");
        }
        if !server.shutdown().await {
            log::warn!("some clients did not close in time");
        }
    });
    log::info!("bye");
    ExitCode::SUCCESS
}

/// Draws the first reachable URL as a QR code on stderr, when a person is looking at it (a
/// terminal, not a log file or a service manager's journal).
fn show_invite_qr(urls: &[String]) {
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() {
        return;
    }
    let Some(url) = urls.first() else { return };
    let url = format!("{url}/");
    if let Some(qr) = smolchat::invite::qr_terminal(&url) {
        // A failed write to our own terminal is not worth stopping the server for.
        let _ = writeln!(stderr, "{qr}\nScan to join: {url}");
    }
}
