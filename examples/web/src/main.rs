//! `stepping-web-example`: the meter-reads web service (see the library's
//! docs for its routes).
//!
//! ```text
//! stepping-web-example (--sqlite PATH | --postgres CONN [--prefix P]) [--port N] [--users U]
//! ```

use std::process::ExitCode;

use stepping_web_example::{Target, service};

fn usage() -> &'static str {
    "usage: stepping-web-example (--sqlite PATH | --postgres CONN [--prefix P]) [--port N] [--users U]"
}

fn parse() -> Result<(Target, u16, u64), String> {
    let (mut target, mut prefix, mut port, mut users) = (None, "web_".to_owned(), 3000u16, 100u64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--sqlite" => target = Some(Target::Sqlite(value()?.into())),
            "--postgres" => target = Some(Target::Postgres(value()?, String::new())),
            "--prefix" => prefix = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--users" => users = value()?.parse().map_err(|e| format!("--users: {e}"))?,
            other => return Err(format!("unknown argument `{other}`\n{}", usage())),
        }
    }
    let target = match target {
        Some(Target::Postgres(url, _)) => Target::Postgres(url, prefix),
        Some(t) => t,
        None => return Err(usage().to_owned()),
    };
    Ok((target, port, users))
}

fn main() -> ExitCode {
    let (target, port, users) = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        let service = service(target, users).await.map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        println!("listening on http://127.0.0.1:{port}/");
        axum::serve(listener, service.router)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
