//! Postgres housekeeping for tests and benchmarks that share a long-lived
//! server (`STEPPING_TEST_PG`).

/// Drops every table in the connection's current schema whose name starts
/// with `prefix` (the state tables, their metadata tables, a failed-batch
/// table and any application table made beside them), and every sequence
/// (the time sequence); returns how many tables there were. Meant for a prefix unique to one test or run: an empty
/// prefix is refused.
///
/// # Errors
/// An empty prefix, or a connection or SQL failure.
pub fn drop_tables_with_prefix(
    conn: &str,
    prefix: &str,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    if prefix.is_empty() {
        return Err("refusing to drop every table: the prefix is empty".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT quote_ident(tablename) FROM pg_tables \
                 WHERE schemaname = current_schema() AND left(tablename, length($1)) = $1",
                &[&prefix],
            )
            .await?;
        for row in &rows {
            let name: String = row.try_get(0)?;
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {name} CASCADE"))
                .await?;
        }
        // A time sequence (`<prefix>time`) too.
        let sequences = client
            .query(
                "SELECT quote_ident(sequencename) FROM pg_sequences \
                 WHERE schemaname = current_schema() AND left(sequencename, length($1)) = $1",
                &[&prefix],
            )
            .await?;
        for row in &sequences {
            let name: String = row.try_get(0)?;
            client
                .batch_execute(&format!("DROP SEQUENCE IF EXISTS {name}"))
                .await?;
        }
        drop(client);
        let _ = task.await;
        Ok(rows.len())
    })
}

/// Runs `sql` (one or more statements, results ignored) on a connection of
/// its own: for tests that do to a store what no store call does (end a
/// session, take a time behind the store's back).
///
/// # Errors
/// A connection or SQL failure.
pub fn execute(conn: &str, sql: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        client.batch_execute(sql).await?;
        drop(client);
        let _ = task.await;
        Ok(())
    })
}

/// The first column of the first row of `sql` (a `BIGINT`), on a
/// connection of its own: for tests that look at a store's bookkeeping.
///
/// # Errors
/// A connection or SQL failure, or no row.
pub fn query_i64(conn: &str, sql: &str) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(connection);
        let value: i64 = client.query_one(sql, &[]).await?.try_get(0)?;
        drop(client);
        let _ = task.await;
        Ok(value)
    })
}

/// Drops the tables under a prefix when it goes out of scope, however a
/// test ends (a failure is printed, not raised: it may run while
/// unwinding).
#[derive(Debug)]
pub struct DropTablesOnExit {
    /// The connection string.
    pub conn: String,
    /// The prefix whose tables go.
    pub prefix: String,
}

impl Drop for DropTablesOnExit {
    fn drop(&mut self) {
        if let Err(e) = drop_tables_with_prefix(&self.conn, &self.prefix) {
            eprintln!("could not drop the tables {}*: {e}", self.prefix);
        }
    }
}
