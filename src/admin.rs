//! `aula admin create`: the first platform administrator, never a public mutation.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

use crate::cli::GlobalArgs;
use crate::database::Database;

pub async fn create(global: &GlobalArgs, email: &str) -> anyhow::Result<()> {
    let password = match std::env::var("AULA_ADMIN_PASSWORD") {
        Ok(password) => password,
        Err(_) => prompt_password()?,
    };
    let database = Database::open(global.database_url.as_deref(), &global.data_dir).await?;
    let pool = aula_eventlog::db::pool(database.connect.clone(), 2).await?;
    aula_eventlog::db::migrate(&pool)
        .await
        .context("applying migrations")?;
    let result = aula_api::create_admin(&pool, email, &password).await;
    pool.close().await;
    database.close().await;
    let id = result.map_err(|e| anyhow::anyhow!("could not create the administrator: {e}"))?;
    println!("administrator {email} created (user id {id})");
    Ok(())
}

/// Reads a password from the terminal without echoing it.
fn prompt_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    anyhow::ensure!(
        stdin.is_terminal(),
        "no terminal to ask for the password: set AULA_ADMIN_PASSWORD"
    );
    eprint!("Password for the new administrator: ");
    std::io::stderr().flush()?;
    let echo = EchoOff::new();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    drop(echo);
    eprintln!();
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Turns terminal echo off for its lifetime.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and we only
        // use it after success.
        unsafe {
            let mut original: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut original) != 0 {
                return EchoOff(None);
            }
            let mut silent = original;
            silent.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &silent);
            EchoOff(Some(original))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(original) = self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &original) };
        }
    }
}
