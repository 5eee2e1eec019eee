//! The PixelPay client against the sandbox's PixelPay simulator: approvals
//! checked by hash and amount, the sandbox amount table, auth/capture/void,
//! status after a lost answer, per-merchant isolation, timeouts, and that no
//! error ever carries the card or the Secret Key.

use std::collections::BTreeMap;
use std::time::Duration;

use payhub_connectors::ConnectorError;
use payhub_connectors::pixelpay::{
    Billing, CardOutcome, PixelPayAccount, PixelPayClient, SaleItem, SaleRequest, VoidOutcome,
};
use payhub_core::card::{Card, CardSource, CardToken};
use payhub_core::{Currency, Money};
use payhub_sandbox::{
    PIXELPAY_OTHER_KEY_ID, PIXELPAY_OTHER_SECRET_KEY, PIXELPAY_SANDBOX_AUTH_HASH, PIXELPAY_SANDBOX_CARD_TOKEN,
    PIXELPAY_SANDBOX_SECRET_KEY, PIXELPAY_TEST_VISA, PixelPayCollection, PixelPayFault, Sandbox, SandboxConfig,
};
use secrecy::SecretString;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const CVV: &str = "300";
const HOLDER: &str = "Pedro Perez";

struct Setup {
    sandbox: Sandbox,
    client: PixelPayClient,
    account: PixelPayAccount,
    shutdown: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn setup() -> Setup {
    let shutdown = CancellationToken::new();
    let mut cfg = SandboxConfig::local_ephemeral("sandbox-test-app");
    cfg.pixelpay_webhook_retry_delay = Duration::from_millis(100);
    // Starting the sandbox also installs the rustls crypto provider.
    let sandbox = Sandbox::start(cfg, shutdown.clone()).await.expect("the sandbox starts");
    let client = PixelPayClient::new(Duration::from_secs(5)).expect("client");
    let account = PixelPayAccount::public_sandbox(sandbox.provider_url());
    Setup {
        sandbox,
        client,
        account,
        shutdown,
    }
}

fn hnl(minor: i64) -> Money {
    Money::from_minor(minor, Currency::Hnl)
}

/// A card valid for three more years.
fn card(number: &str) -> CardSource {
    let today = OffsetDateTime::now_utc().date();
    let expire = format!("{:02}{:02}", (today.year() + 3) % 100, 12);
    CardSource::Card(Card::parse(number, CVV, &expire, HOLDER, today).expect("a valid card"))
}

fn sale(order_id: &str, amount: Money) -> SaleRequest {
    SaleRequest {
        order_id: order_id.into(),
        amount,
        tax_amount: None,
        shipping_amount: None,
        items: vec![SaleItem {
            code: Some("0000123".into()),
            title: "Camiseta Roja".into(),
            description: None,
            price: amount,
            qty: 1,
            tax: None,
            total: amount,
        }],
        order_extras: BTreeMap::from([("payhub_order".to_string(), order_id.to_string())]),
        note: None,
        customer_name: HOLDER.into(),
        customer_email: "pedro.perez@example.com".into(),
        billing: Billing {
            address: "Col. Palmira".into(),
            country: "HN".into(),
            state: "HN-FM".into(),
            city: "Tegucigalpa".into(),
            zip: None,
            phone: "+50499999999".into(),
        },
        order_callback: None,
        card: card(PIXELPAY_TEST_VISA),
    }
}

/// Fails when `text` holds the card, the CVV as a value, or the secret.
fn assert_clean(text: &str) {
    for leak in [
        PIXELPAY_TEST_VISA,
        "4111 1111",
        PIXELPAY_SANDBOX_SECRET_KEY,
        PIXELPAY_SANDBOX_AUTH_HASH,
        HOLDER,
        "pedro.perez@example.com",
        "+50499999999",
    ] {
        assert!(!text.contains(leak), "{leak} leaked into {text}");
    }
    assert!(!text.contains(&format!("\"{CVV}\"")), "the CVV leaked into {text}");
}

#[tokio::test]
async fn an_approved_sale_is_verified_and_recorded_without_the_card() {
    let t = setup().await;
    let outcome = t.client.sale(&t.account, &sale("ord-1", hnl(100))).await.unwrap();
    let CardOutcome::Approved(approval) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(approval.hash_verified);
    assert_eq!(approval.approved_amount, hnl(100));
    assert_eq!(approval.transaction_type, "sale");
    assert!(approval.transaction_id.is_some() && approval.auth_code.is_some());
    let tx = t
        .sandbox
        .pixelpay_transaction(&approval.payment_uuid)
        .expect("recorded");
    assert_eq!(
        (tx.order_id.as_str(), tx.amount_minor, tx.currency.as_str()),
        ("ord-1", 100, "HNL")
    );
    assert_eq!(tx.card_last4, "1111");

    // A token pays too; USD and NIO are PixelPay currencies as well.
    let mut req = sale("ord-2", Money::from_minor(1999, Currency::Usd));
    req.card = CardSource::Token(CardToken::parse(PIXELPAY_SANDBOX_CARD_TOKEN).unwrap());
    req.tax_amount = Some(Money::from_minor(0, Currency::Usd));
    assert!(matches!(
        t.client.sale(&t.account, &req).await.unwrap(),
        CardOutcome::Approved(_)
    ));
}

#[tokio::test]
async fn the_sandbox_amount_table_maps_to_outcomes() {
    let t = setup().await;
    for (minor, reason) in [(200, "Transacción denegada"), (400, "robo o extravío")] {
        match t.client.sale(&t.account, &sale("ord", hnl(minor))).await.unwrap() {
            CardOutcome::Declined {
                reason: r,
                payment_uuid,
                ..
            } => {
                assert!(r.contains(reason), "{r}");
                assert!(payment_uuid.is_some());
            }
            other => panic!("{minor}: {other:?}"),
        }
    }
    for (minor, status) in [
        (300, 400),
        (500, 406),
        (600, 412),
        (900, 412),
        (1000, 412),
        (1100, 412),
        (1200, 412),
        (1300, 412),
        (1400, 412),
    ] {
        let err = t.client.sale(&t.account, &sale("ord", hnl(minor))).await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Permanent(m) if m.contains(&format!("answered {status}"))),
            "{minor}: {err}"
        );
    }
    // 7.00: a general failure; nothing was charged, but payhub cannot know.
    match t.client.sale(&t.account, &sale("ord", hnl(700))).await.unwrap() {
        CardOutcome::Indeterminate {
            payment_uuid: None,
            detail,
        } => assert!(detail.contains("500"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_after_approval_is_settled_by_status_not_by_a_second_sale() {
    let t = setup().await;
    let req = sale("ord-8", hnl(800));
    let CardOutcome::Indeterminate {
        payment_uuid: Some(uuid),
        detail,
    } = t.client.sale(&t.account, &req).await.unwrap()
    else {
        panic!("8.00 is a 408 that names the payment")
    };
    assert!(detail.contains("408"), "{detail}");
    let status = t
        .client
        .status(&t.account, &uuid)
        .await
        .unwrap()
        .expect("PixelPay knows it");
    assert!(status.approved && status.hash_verified);
    assert_eq!(status.approved_amount_minor, Some(800));
    assert_eq!(status.order_id.as_deref(), Some("ord-8"));
    assert_eq!(status.settles(&t.account, "ord-8", hnl(800)), Ok(true));
    assert!(status.settles(&t.account, "ord-8", hnl(801)).is_err());
    assert!(status.settles(&t.account, "ord-9", hnl(800)).is_err());
    // One charge: status was enough.
    assert_eq!(t.sandbox.pixelpay_transactions().len(), 1);
}

#[tokio::test]
async fn auth_then_capture_then_void() {
    let t = setup().await;
    let CardOutcome::Approved(auth) = t.client.auth(&t.account, &sale("ord-a", hnl(5000))).await.unwrap() else {
        panic!("the auth is approved")
    };
    assert_eq!(auth.transaction_type, "auth");

    let err = t
        .client
        .capture(&t.account, &auth.payment_uuid, hnl(5001))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Permanent(m) if m.contains("422") && m.contains("transaction_approved_amount:")),
        "{err}"
    );
    let CardOutcome::Approved(captured) = t
        .client
        .capture(&t.account, &auth.payment_uuid, hnl(4000))
        .await
        .unwrap()
    else {
        panic!("the capture is approved")
    };
    assert_eq!(captured.approved_amount, hnl(4000));
    assert_eq!(captured.transaction_type, "capture");
    assert!(
        !captured.hash_verified,
        "a capture's answer cannot be tied to the order"
    );

    let status = t.client.status(&t.account, &auth.payment_uuid).await.unwrap().unwrap();
    assert_eq!(status.transaction_type.as_deref(), Some("capture"));
    assert_eq!(status.settles(&t.account, "ord-a", hnl(4000)), Ok(true));

    assert_eq!(
        t.client
            .void(&t.account, &auth.payment_uuid, "buyer cancelled")
            .await
            .unwrap(),
        VoidOutcome::Voided {
            payment_uuid: auth.payment_uuid.clone()
        }
    );
    let status = t.client.status(&t.account, &auth.payment_uuid).await.unwrap().unwrap();
    assert!(status.is_voided());
    assert_eq!(status.settles(&t.account, "ord-a", hnl(4000)), Ok(false));
    let err = t
        .client
        .void(&t.account, &auth.payment_uuid, "again")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Permanent(m) if m.contains("anulada")),
        "{err}"
    );
    assert_eq!(t.client.status(&t.account, "P-unknown").await.unwrap(), None);
}

#[tokio::test]
async fn one_shops_account_is_not_anothers() {
    let t = setup().await;
    let CardOutcome::Approved(approval) = t.client.sale(&t.account, &sale("ord-1", hnl(100))).await.unwrap() else {
        panic!("approved")
    };
    let other = PixelPayAccount::new(
        t.sandbox.provider_url(),
        PIXELPAY_OTHER_KEY_ID,
        SecretString::from(PIXELPAY_OTHER_SECRET_KEY),
    );
    assert_eq!(t.client.status(&other, &approval.payment_uuid).await.unwrap(), None);
    assert!(matches!(
        t.client.void(&other, &approval.payment_uuid, "x").await,
        Err(ConnectorError::Permanent(_))
    ));
    // The other account's own sale is approved and proven with its own secret.
    assert!(matches!(
        t.client.sale(&other, &sale("ord-1", hnl(100))).await.unwrap(),
        CardOutcome::Approved(a) if a.hash_verified
    ));

    // A wrong secret is refused by PixelPay (401) ...
    let wrong = PixelPayAccount::new(
        t.sandbox.provider_url(),
        payhub_connectors::pixelpay::SANDBOX_KEY_ID,
        SecretString::from(PIXELPAY_OTHER_SECRET_KEY),
    );
    let err = t.client.sale(&wrong, &sale("ord-1", hnl(100))).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Permanent(m) if m.contains("401")),
        "{err}"
    );
    assert_clean(&err.to_string());
}

#[tokio::test]
async fn a_paid_collection_is_settled_by_status() {
    let t = setup().await;
    // Where the success webhook goes does not matter here (port 9: refused).
    let paid = t
        .sandbox
        .pixelpay_pay_collection(&PixelPayCollection::documented_example(), "http://127.0.0.1:9/none")
        .await
        .unwrap();
    let status = t.client.status(&t.account, &paid.uuid).await.unwrap().unwrap();
    assert!(status.approved && status.hash_verified);
    assert_eq!(status.currency, Some(Currency::Usd));
    assert_eq!(
        status.settles(&t.account, &paid.reference, Money::from_minor(9999, Currency::Usd)),
        Ok(true)
    );
    assert!(
        status
            .settles(&t.account, &paid.reference, Money::from_minor(9999, Currency::Hnl))
            .is_err()
    );
}

#[tokio::test]
async fn input_errors_and_bad_requests_are_permanent_and_clean() {
    let t = setup().await;
    // Refused by payhub before sending: BRL, and the seed's inconsistent item.
    let before = t.sandbox.pixelpay_requests();
    let err = t
        .client
        .sale(&t.account, &sale("ord", Money::from_minor(100, Currency::Brl)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("settles HNL, USD, NIO for this shop, not BRL"),
        "{err}"
    );
    let mut req = sale("ord", hnl(9999));
    req.items[0].total = hnl(999);
    assert!(t.client.sale(&t.account, &req).await.is_err());
    assert_eq!(t.sandbox.pixelpay_requests(), before, "nothing was sent");

    // Refused by PixelPay with per-field errors.
    let mut req = sale("ord", hnl(100));
    req.card = CardSource::Token(CardToken::parse("T-expired").unwrap());
    let err = t.client.sale(&t.account, &req).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Permanent(m) if m.contains("422") && m.contains("card_token: ")),
        "{err}"
    );

    // An expired card (valid when payhub parsed it) is declined by PixelPay.
    let long_ago = time::macros::date!(2020 - 01 - 15);
    let mut req = sale("ord", hnl(100));
    req.card = CardSource::Card(Card::parse(PIXELPAY_TEST_VISA, CVV, "2012", HOLDER, long_ago).unwrap());
    match t.client.sale(&t.account, &req).await.unwrap() {
        CardOutcome::Declined { reason, .. } => assert!(reason.contains("vencida"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn errors_never_carry_what_a_careless_server_echoes() {
    let t = setup().await;
    for status in [400, 402, 422, 500] {
        t.sandbox.pixelpay_fail_next(1, PixelPayFault::EchoRequest(status));
        let result = t.client.sale(&t.account, &sale("ord-echo", hnl(100))).await;
        let text = match &result {
            Ok(CardOutcome::Declined { reason, .. }) => reason.clone(),
            Ok(CardOutcome::Indeterminate { detail, .. }) => detail.clone(),
            Err(e) => e.to_string(),
            Ok(other) => panic!("{status}: {other:?}"),
        };
        assert!(text.contains("sandbox PixelPay fault"), "{status}: {text}");
        assert_clean(&text);
        assert_clean(&format!("{result:?}"));
    }
}

#[tokio::test]
async fn no_answer_is_indeterminate_and_nothing_sent_is_transient() {
    let t = setup().await;
    let impatient = PixelPayClient::new(Duration::from_millis(300)).unwrap();

    // Hung before acting: nothing charged, but payhub cannot know that.
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Hang);
    match impatient.sale(&t.account, &sale("ord-h", hnl(100))).await.unwrap() {
        CardOutcome::Indeterminate {
            payment_uuid: None,
            detail,
        } => assert!(detail.contains("timeout"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(t.sandbox.pixelpay_transactions().is_empty());

    // Charged, then the answer was lost (a 500 without the uuid, or a hang).
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::ApproveButAnswer(500));
    assert!(matches!(
        t.client.sale(&t.account, &sale("ord-l", hnl(100))).await.unwrap(),
        CardOutcome::Indeterminate { payment_uuid: None, .. }
    ));
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::ApproveThenHang);
    assert!(matches!(
        impatient.sale(&t.account, &sale("ord-t", hnl(100))).await.unwrap(),
        CardOutcome::Indeterminate { .. }
    ));
    let charged: Vec<(String, bool)> = t
        .sandbox
        .pixelpay_transactions()
        .into_iter()
        .map(|t| (t.order_id, t.approved))
        .collect();
    assert_eq!(charged, [("ord-l".to_string(), true), ("ord-t".to_string(), true)]);

    // A capture that times out names the payment it was about.
    let CardOutcome::Approved(auth) = t.client.auth(&t.account, &sale("ord-c", hnl(100))).await.unwrap() else {
        panic!("approved")
    };
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Hang);
    assert_eq!(
        match impatient
            .capture(&t.account, &auth.payment_uuid, hnl(100))
            .await
            .unwrap()
        {
            CardOutcome::Indeterminate { payment_uuid, .. } => payment_uuid,
            other => panic!("{other:?}"),
        },
        Some(auth.payment_uuid.clone())
    );
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Hang);
    assert!(matches!(
        impatient.void(&t.account, &auth.payment_uuid, "x").await.unwrap(),
        VoidOutcome::Indeterminate { .. }
    ));
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Hang);
    assert!(
        impatient
            .status(&t.account, &auth.payment_uuid)
            .await
            .unwrap_err()
            .is_transient()
    );

    // 429 and 503 from PixelPay.
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Status(429));
    assert!(
        t.client
            .sale(&t.account, &sale("ord-r", hnl(100)))
            .await
            .unwrap_err()
            .is_transient()
    );
    t.sandbox.pixelpay_fail_next(1, PixelPayFault::Status(503));
    assert!(matches!(
        t.client.sale(&t.account, &sale("ord-u", hnl(100))).await.unwrap(),
        CardOutcome::Indeterminate { .. }
    ));

    // Nobody listening: nothing was sent, so a retry is safe.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = PixelPayAccount::public_sandbox(format!("http://{}", closed.local_addr().unwrap()));
    drop(closed);
    let err = t.client.sale(&nowhere, &sale("ord-n", hnl(100))).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("nothing was sent"), "{err}");
    assert_clean(&err.to_string());
}
