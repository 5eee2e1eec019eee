//! The SMTP sink, driven by a raw (pipelined) SMTP conversation.

mod common;

use std::time::Duration;

use common::TestSandbox;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Reads one (possibly multi-line) reply; returns its lines.
async fn reply(reader: &mut BufReader<OwnedReadHalf>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .expect("a reply in time")
            .expect("read");
        assert!(n > 0, "connection closed; got {lines:?}");
        let line = line.trim_end().to_string();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return lines;
        }
    }
}

async fn code(reader: &mut BufReader<OwnedReadHalf>) -> String {
    let lines = reply(reader).await;
    lines.last().expect("a line")[..3].to_string()
}

#[tokio::test]
async fn pipelined_conversation_records_the_messages() {
    let t = TestSandbox::start().await;
    let stream = TcpStream::connect(t.sandbox.smtp_addr()).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);

    assert_eq!(code(&mut reader).await, "220");
    write.write_all(b"EHLO client.test\r\n").await.expect("write");
    let ehlo = reply(&mut reader).await;
    assert!(ehlo.iter().all(|l| l.starts_with("250")), "{ehlo:?}");
    for ext in ["8BITMIME", "SMTPUTF8", "PIPELINING"] {
        assert!(ehlo.iter().any(|l| l[4..].starts_with(ext)), "{ext} in {ehlo:?}");
    }
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS") || l.contains("AUTH")));

    // MAIL, RCPT, RCPT, DATA in one write, as a pipelining client does.
    write
        .write_all(b"MAIL FROM:<noreply@payhub.test> BODY=8BITMIME\r\nRCPT TO:<buyer@example.com>\r\nRCPT TO:<shop@example.com>\r\nDATA\r\n")
        .await
        .expect("write");
    for expected in ["250", "250", "250", "354"] {
        assert_eq!(code(&mut reader).await, expected);
    }
    let message = "From: payhub <noreply@payhub.test>\r\n\
                   To: buyer@example.com\r\n\
                   Subject: =?utf-8?B?UGVkaWRvIHBhZ28g4pyU?=\r\n\
                   \r\n\
                   Your order was paid.\r\n\
                   ..this line started with a dot\r\n\
                   .\r\n";
    // The message, then a second transaction and QUIT, all pipelined.
    let second = "MAIL FROM:<>\r\nRCPT TO:<admin@example.com>\r\nDATA\r\n";
    write.write_all(message.as_bytes()).await.expect("write");
    write.write_all(second.as_bytes()).await.expect("write");
    for expected in ["250", "250", "250", "354"] {
        assert_eq!(code(&mut reader).await, expected);
    }
    write
        .write_all(b"Subject: Second\r\n\r\nBody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        .await
        .expect("write");
    for expected in ["250", "250", "250", "221"] {
        assert_eq!(code(&mut reader).await, expected);
    }

    let emails = t.sandbox.emails();
    assert_eq!(emails.len(), 2);
    let first = &emails[0];
    assert_eq!(first.mail_from, "noreply@payhub.test");
    assert_eq!(first.rcpt_to, ["buyer@example.com", "shop@example.com"]);
    assert_eq!(first.subject.as_deref(), Some("Pedido pago ✔"));
    assert!(
        first.data.contains("\r\n.this line started with a dot\r\n"),
        "{}",
        first.data
    );
    assert!(first.data.ends_with("dot\r\n"));
    assert!(first.data.contains("Subject: =?utf-8?B?"), "raw data kept");
    assert_eq!(emails[1].mail_from, "");
    assert_eq!(emails[1].rcpt_to, ["admin@example.com"]);
    assert_eq!(emails[1].subject.as_deref(), Some("Second"));
    assert_eq!(emails[1].data, "Subject: Second\r\n\r\nBody\r\n");

    // The control route lists them too.
    let list: serde_json::Value = t
        .http
        .get(format!("{}/sandbox/emails", t.sandbox.provider_url()))
        .send()
        .await
        .expect("reply")
        .json()
        .await
        .expect("json");
    assert_eq!(list["emails"][0]["subject"], "Pedido pago ✔");
}

#[tokio::test]
async fn concurrent_connections_and_protocol_errors() {
    let t = TestSandbox::start().await;
    let addr = t.sandbox.smtp_addr();

    let sessions = (0..8).map(|i| {
        tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            assert_eq!(code(&mut reader).await, "220");
            // Out of order and unknown commands are refused without closing.
            write.write_all(b"MAIL FROM:<a@b.c>\r\n").await.expect("write");
            assert_eq!(code(&mut reader).await, "503");
            write.write_all(b"HELO c\r\n").await.expect("write");
            assert_eq!(code(&mut reader).await, "250");
            write.write_all(b"DATA\r\n").await.expect("write");
            assert_eq!(code(&mut reader).await, "503");
            write.write_all(b"FOO\r\n").await.expect("write");
            assert_eq!(code(&mut reader).await, "500");
            let mail = format!(
                "MAIL FROM:<s{i}@x.test>\r\nRCPT TO:<r{i}@y.test>\r\nDATA\r\nSubject: mail {i}\r\n\r\nhi\r\n.\r\nQUIT\r\n"
            );
            write.write_all(mail.as_bytes()).await.expect("write");
            for expected in ["250", "250", "354", "250", "221"] {
                assert_eq!(code(&mut reader).await, expected);
            }
        })
    });
    for s in sessions.collect::<Vec<_>>() {
        s.await.expect("session");
    }

    let mut subjects: Vec<String> = t.sandbox.emails().into_iter().filter_map(|e| e.subject).collect();
    subjects.sort();
    assert_eq!(subjects, (0..8).map(|i| format!("mail {i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_stops_the_listeners() {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sandbox = payhub_sandbox::Sandbox::start(payhub_sandbox::SandboxConfig::local_ephemeral("x"), shutdown.clone())
        .await
        .expect("starts");
    let addr = sandbox.smtp_addr();
    // An open session is told the service is going away.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (read, _write) = stream.into_split();
    let mut reader = BufReader::new(read);
    assert_eq!(code(&mut reader).await, "220");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), sandbox.stopped())
        .await
        .expect("stops in time");
    assert_eq!(code(&mut reader).await, "421");
    assert!(TcpStream::connect(addr).await.is_err());
}
