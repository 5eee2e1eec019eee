//! E-mails to buyers and alerts to shop admins (pt-BR, the buyers' language).

use crate::Attempt;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use payhub_core::events::OrderStatusChanged;
use payhub_core::{Envelope, OrderStatus};
use std::time::Duration;

pub struct Mail {
    pub subject: String,
    pub body: String,
}

/// A file attached to an e-mail (the buyer's receipt).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `pool_size`: SMTP connections kept open and used at once. Each mail
    /// holds one for a few round trips (and, with lettre on Linux, about
    /// 40 ms of delayed ACK between the message and its final dot), so the
    /// pool, not the CPU, bounds how many mails a notifier sends a second.
    pub fn new(smtp_url: &str, from: &str, pool_size: u32) -> anyhow::Result<Mailer> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .map_err(|e| anyhow::anyhow!("PAYHUB_SMTP_URL is not usable: {e}"))?
            .timeout(Some(Duration::from_secs(10)))
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(pool_size))
            .build();
        Ok(Mailer {
            transport,
            from: from.parse()?,
        })
    }

    pub(crate) async fn send(&self, to: &str, mail: &Mail) -> Attempt {
        self.send_with(to, mail, &[]).await
    }

    /// Sends `mail` with files attached (multipart/mixed: the text, then each file).
    pub(crate) async fn send_with(&self, to: &str, mail: &Mail, attachments: &[Attachment]) -> Attempt {
        self.send_parts(&[to], mail, None, attachments).await
    }

    /// Sends `mail` to every address in `to` (one message), as text or, with
    /// `html`, as multipart/alternative (the text, then the HTML), followed
    /// by the files (multipart/mixed).
    pub(crate) async fn send_parts(
        &self,
        to: &[&str],
        mail: &Mail,
        html: Option<&str>,
        attachments: &[Attachment],
    ) -> Attempt {
        let mut builder = Message::builder().from(self.from.clone()).subject(&mail.subject);
        for address in to {
            match address.parse::<Mailbox>() {
                Ok(m) => builder = builder.to(m),
                Err(e) => {
                    return Attempt {
                        ok: false,
                        status_code: None,
                        error: Some(format!("not a deliverable address: {e}")),
                    };
                }
            }
        }
        let text = || {
            lettre::message::SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(mail.body.clone())
        };
        let built = if attachments.is_empty() && html.is_none() {
            builder.header(ContentType::TEXT_PLAIN).body(mail.body.clone())
        } else {
            let mut parts = match html {
                None => lettre::message::MultiPart::mixed().singlepart(text()),
                Some(h) => lettre::message::MultiPart::mixed().multipart(
                    lettre::message::MultiPart::alternative().singlepart(text()).singlepart(
                        lettre::message::SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(h.to_string()),
                    ),
                ),
            };
            for a in attachments {
                let content_type = match ContentType::parse(a.content_type) {
                    Ok(c) => c,
                    Err(e) => {
                        return Attempt {
                            ok: false,
                            status_code: None,
                            error: Some(format!("bad attachment type {}: {e}", a.content_type)),
                        };
                    }
                };
                parts = parts.singlepart(
                    lettre::message::Attachment::new(a.filename.clone()).body(a.bytes.clone(), content_type),
                );
            }
            builder.multipart(parts)
        };
        let message = match built {
            Ok(m) => m,
            Err(e) => {
                return Attempt {
                    ok: false,
                    status_code: None,
                    error: Some(format!("cannot build the message: {e}")),
                };
            }
        };
        match self.transport.send(message).await {
            Ok(resp) => Attempt {
                ok: true,
                status_code: Some(i32::from(u16::from(resp.code()))),
                error: None,
            },
            Err(e) => Attempt {
                ok: false,
                status_code: e.status().map(|c| i32::from(u16::from(c))),
                error: Some(format!("SMTP: {e}")),
            },
        }
    }
}

/// The amount as buyers read it: `R$ 10,00`, `L 10.00`, `US$ 10.00`, `C$ 10.00`.
fn reais(change: &OrderStatusChanged) -> String {
    money_text(change.amount)
}

/// Any amount as buyers read it (see [`reais`]).
fn money_text(amount: payhub_core::Money) -> String {
    let major = amount.to_major_string();
    match amount.currency() {
        payhub_core::Currency::Brl => format!("R$ {}", major.replace('.', ",")),
        payhub_core::Currency::Hnl => format!("L {major}"),
        payhub_core::Currency::Usd => format!("US$ {major}"),
        payhub_core::Currency::Nio => format!("C$ {major}"),
        payhub_core::Currency::Cop => format!("COP {major}"),
    }
}

/// The buyer's e-mail when a card payment did not go through.
fn card_failed_mail(order: &str, greeting: &str, change: &OrderStatusChanged) -> Mail {
    let reason = change.reason.as_deref().unwrap_or_default();
    if reason.contains(payhub_core::events::CARD_UNCONFIRMED) {
        return Mail {
            subject: format!("Pagamento com cartão do pedido {order} em verificação"),
            body: format!(
                "{greeting}\n\nNão conseguimos confirmar o pagamento com cartão do pedido {order} ({}).\n\
                 A loja foi avisada e vai verificar com a operadora. Não pague de novo antes do contato da loja:\n\
                 o cartão não será cobrado novamente.\n",
                reais(change)
            ),
        };
    }
    let why = reason
        .find(payhub_core::events::CARD_DECLINED)
        .map(|i| &reason[i + payhub_core::events::CARD_DECLINED.len()..])
        .unwrap_or("a operadora não aprovou o pagamento");
    Mail {
        subject: format!("Pagamento com cartão recusado: pedido {order}"),
        body: format!(
            "{greeting}\n\nO pagamento com cartão do pedido {order} ({}) foi recusado: {why}.\n\
             Nenhum valor foi cobrado. Você pode fazer um novo pedido com outro cartão.\n",
            reais(change)
        ),
    }
}

/// The buyer's e-mail for this change, if the buyer is told about it. Every
/// one ends with `order_link`, the order's own page ("my orders", issue 11 §3).
pub fn buyer_mail(env: &Envelope, change: &OrderStatusChanged, order_link: &str) -> Option<Mail> {
    let mut mail = buyer_mail_text(env, change)?;
    mail.body.push_str(&format!(
        "\nAcompanhe o seu pedido (status, itens, comprovante):\n{order_link}\n"
    ));
    Some(mail)
}

fn buyer_mail_text(env: &Envelope, change: &OrderStatusChanged) -> Option<Mail> {
    let order = env.correlation_id.as_deref().unwrap_or("");
    let greeting = format!("Olá, {}!", change.customer_name);
    match change.to {
        // Wake's checkout tells the buyer; the e-mail comes with the capture.
        OrderStatus::Authorized => None,
        // A Pago Seguro buyer is already on the way to Pago Seguro's page
        // (payhub's checkout sends them there); there is no PIX code to mail.
        OrderStatus::AwaitingPayment if change.provider == payhub_core::Provider::Pagoseguro => None,
        OrderStatus::AwaitingPayment => {
            let charge = change.charge.as_ref()?;
            Some(Mail {
                subject: format!("Pedido {order}: pague {} com PIX", reais(change)),
                body: format!(
                    "{greeting}\n\nRecebemos o seu pedido {order} ({}).\nValor: {}\n\n\
                     Pague com PIX copia e cola:\n{}\n\nOu abra o link de pagamento:\n{}\n\n{}\
                     Assim que o pagamento for confirmado, avisaremos você por e-mail.\n",
                    change.summary,
                    reais(change),
                    charge.br_code,
                    charge.payment_link_url,
                    charge
                        .expires_at
                        .map(|t| format!("O código vale até {} (UTC).\n\n", t.date()))
                        .unwrap_or_default(),
                ),
            })
        }
        OrderStatus::Paid => Some(Mail {
            subject: format!("Pagamento confirmado: pedido {order}"),
            body: format!(
                "{greeting}\n\nO pagamento do pedido {order} foi confirmado.\nValor pago: {}\nItens: {}\n{}\n\
                 O comprovante de pagamento segue em anexo (PDF em A4 e para impressora de 80 mm).\n\nObrigado pela compra!\n",
                reais(change),
                change.summary,
                change
                    .end_to_end_id
                    .as_ref()
                    .map(|e| format!("Identificador PIX (E2E): {e}\n"))
                    .unwrap_or_default(),
            ),
        }),
        OrderStatus::Expired => Some(Mail {
            subject: format!("O PIX do pedido {order} expirou"),
            body: format!(
                "{greeting}\n\nO código PIX do pedido {order} ({}) expirou sem pagamento.\nSe ainda quiser os itens, faça um novo pedido na loja.\n",
                reais(change)
            ),
        }),
        OrderStatus::Failed if change.provider.method() == payhub_core::PaymentMethod::Card => {
            Some(card_failed_mail(order, &greeting, change))
        }
        OrderStatus::Failed => Some(Mail {
            subject: format!("Não foi possível processar o pagamento do pedido {order}"),
            body: format!(
                "{greeting}\n\nNão conseguimos gerar a cobrança do pedido {order} ({}). O pedido foi bloqueado e a loja foi avisada.\nNenhum valor foi cobrado.\n",
                reais(change)
            ),
        }),
        OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
            let refund = change.refund.as_ref()?;
            let rest = if change.to == OrderStatus::Refunded {
                "O valor total do pedido foi devolvido.".to_string()
            } else {
                format!(
                    "Total devolvido até agora: {} de {}.",
                    money_text(refund.refunded_total),
                    reais(change)
                )
            };
            Some(Mail {
                subject: format!("Reembolso de {}: pedido {order}", money_text(refund.amount)),
                body: format!(
                    "{greeting}\n\nA loja reembolsou {} do pedido {order}.\n{rest}\n{}\
                     O valor volta pelo mesmo meio de pagamento (PIX ou cartão); o prazo depende do seu banco.\n",
                    money_text(refund.amount),
                    refund
                        .reason
                        .as_deref()
                        .filter(|r| !r.is_empty())
                        .map(|r| format!("Motivo: {r}\n"))
                        .unwrap_or_default(),
                ),
            })
        }
        OrderStatus::Fulfilling
        | OrderStatus::Shipped
        | OrderStatus::Delivered
        | OrderStatus::Returned
        | OrderStatus::Cancelled => Some(fulfilment_mail(order, &greeting, change)),
        OrderStatus::Accepted | OrderStatus::UnderReview => None,
    }
}

/// The buyer's e-mail when the shop moves a paid order on (issue 12):
/// forwarded, shipped (with the carrier, the tracking code and link),
/// delivered, returned, cancelled.
fn fulfilment_mail(order: &str, greeting: &str, change: &OrderStatusChanged) -> Mail {
    let s = change.shipment.as_deref().cloned().unwrap_or_default();
    let promise = s
        .promised_delivery_on
        .map(|d| {
            format!(
                "Previsão de entrega: até {:02}/{:02}/{}.\n",
                d.day(),
                u8::from(d.month()),
                d.year()
            )
        })
        .unwrap_or_default();
    let note = s
        .note
        .as_deref()
        .map(|n| format!("Observação da loja: {n}\n"))
        .unwrap_or_default();
    let (subject, what) = match change.to {
        OrderStatus::Fulfilling => (
            format!("Pedido {order} encaminhado para entrega"),
            format!("A loja está preparando o seu pedido {order} para envio.\n{promise}"),
        ),
        OrderStatus::Shipped => (
            format!("Pedido {order} enviado: acompanhe a entrega"),
            format!(
                "O seu pedido {order} foi enviado.\nTransportadora: {}\nCódigo de rastreio: {}\n{}{promise}",
                s.carrier.as_deref().unwrap_or("-"),
                s.tracking_code.as_deref().unwrap_or("-"),
                s.tracking_url
                    .as_deref()
                    .map(|u| format!("Acompanhe a entrega: {u}\n"))
                    .unwrap_or_default(),
            ),
        ),
        OrderStatus::Delivered => (
            format!("Pedido {order} entregue"),
            format!("O seu pedido {order} foi entregue. Obrigado pela compra!\n"),
        ),
        OrderStatus::Returned => (
            format!("Pedido {order} devolvido"),
            format!("O seu pedido {order} foi devolvido à loja.\n"),
        ),
        _ => (
            format!("Pedido {order} cancelado"),
            format!(
                "O seu pedido {order} ({}) foi cancelado pela loja.\nSe houver valor a devolver, a loja fará o reembolso pelo mesmo meio de pagamento.\n",
                reais(change)
            ),
        ),
    };
    Mail {
        subject,
        body: format!("{greeting}\n\n{what}{note}"),
    }
}

/// The alert a shop's admin gets when an order is blocked or needs review.
pub fn admin_alert(env: &Envelope, change: &OrderStatusChanged, shop_name: &str) -> Mail {
    let order = env.correlation_id.as_deref().unwrap_or("");
    Mail {
        subject: format!("[payhub] Pedido {order} {}: ação necessária", change.to.as_str()),
        body: format!(
            "Loja: {shop_name}\nPedido: {order} (payhub {})\nNovo estado: {} (antes: {})\nMotivo: {}\nValor: {}\n",
            env.order_id.map(|i| i.to_string()).unwrap_or_default(),
            change.to.as_str(),
            change.from.as_str(),
            change.reason.as_deref().unwrap_or("-"),
            reais(change),
        ),
    }
}

/// An alert raised by a service (a rejected webhook, a stale order).
pub fn alert(env: &Envelope, alert: &payhub_core::events::AlertRaised) -> Mail {
    let order = env
        .order_id
        .map(|i| format!("\nPedido payhub: {i}"))
        .unwrap_or_default();
    Mail {
        subject: format!("[payhub] {}", alert.subject),
        body: format!("{}\n\nTipo: {}{order}\nEvento: {}\n", alert.detail, alert.kind, env.id),
    }
}

/// The buyer's invoice (issue 12 §3): number and the DANFE and XML links,
/// then the order's own page ("my orders", issue 11 §3).
pub fn invoice_issued(order: &str, invoice: &payhub_core::events::InvoiceUpdated, order_link: &str) -> Mail {
    let series = invoice
        .series
        .as_deref()
        .map(|s| format!(", série {s}"))
        .unwrap_or_default();
    let mut body = format!(
        "Olá, {}!\n\nA nota fiscal do seu pedido {order} foi emitida: NF-e nº {}{series}.\n",
        invoice.customer_name,
        invoice.number.as_deref().unwrap_or("-"),
    );
    if let Some(key) = &invoice.access_key {
        body.push_str(&format!("Chave de acesso: {key}\n"));
    }
    if let Some(pdf) = &invoice.pdf_url {
        body.push_str(&format!("\nDANFE (PDF): {pdf}\n"));
    }
    if let Some(xml) = &invoice.xml_url {
        body.push_str(&format!("XML: {xml}\n"));
    }
    body.push_str("\nGuarde o XML: é a nota fiscal com validade jurídica.\n");
    body.push_str(&format!(
        "\nAcompanhe o seu pedido (status, itens, comprovante):\n{order_link}\n"
    ));
    Mail {
        subject: format!("Nota fiscal do pedido {order}"),
        body,
    }
}

/// The buyer's notice that the invoice of the refunded or cancelled order
/// was cancelled.
pub fn invoice_cancelled(order: &str, invoice: &payhub_core::events::InvoiceUpdated) -> Mail {
    let mut body = format!(
        "Olá, {}!\n\nA nota fiscal do seu pedido {order} (NF-e nº {}) foi cancelada, porque o pedido foi \
         reembolsado ou cancelado.\n",
        invoice.customer_name,
        invoice.number.as_deref().unwrap_or("-"),
    );
    if let Some(key) = &invoice.access_key {
        body.push_str(&format!("Chave de acesso: {key}\n"));
    }
    if let Some(xml) = &invoice.xml_url {
        body.push_str(&format!("\nXML do cancelamento: {xml}\n"));
    }
    Mail {
        subject: format!("Nota fiscal do pedido {order} cancelada"),
        body,
    }
}

/// The alert a shop's admin gets when an order's invoice failed, or the
/// cancellation of its issued invoice did.
pub fn invoice_failed(
    env: &Envelope,
    order: &str,
    shop_name: &str,
    invoice: &payhub_core::events::InvoiceUpdated,
) -> Mail {
    if invoice.status == payhub_core::invoice::InvoiceStatus::CancelFailed {
        return Mail {
            subject: format!("[payhub] Nota fiscal não cancelada: pedido {order}"),
            body: format!(
                "Loja: {shop_name}\nPedido: {order} (payhub {})\nServiço: {}\nNF-e nº {}\nMotivo: {}\n\n\
                 O pedido foi reembolsado ou cancelado, mas a NF-e continua válida: cancele-a no serviço ou emita uma \
                 nota de devolução.\nEvento: {}\n",
                env.order_id.map(|i| i.to_string()).unwrap_or_default(),
                invoice.service,
                invoice.number.as_deref().unwrap_or("-"),
                invoice.reason.as_deref().unwrap_or("-"),
                env.id
            ),
        };
    }
    Mail {
        subject: format!("[payhub] Nota fiscal não emitida: pedido {order}"),
        body: format!(
            "Loja: {shop_name}\nPedido: {order} (payhub {})\nServiço: {}\nMotivo: {}\n\n\
             O pedido está pago; a nota fiscal precisa ser emitida à parte (ou corrigida e emitida de novo no serviço).\n\
             Evento: {}\n",
            env.order_id.map(|i| i.to_string()).unwrap_or_default(),
            invoice.service,
            invoice.reason.as_deref().unwrap_or("-"),
            env.id
        ),
    }
}

/// The alert a shop's admin gets when payhub gave up delivering a webhook.
pub fn webhook_failure_alert(
    env: &Envelope,
    change: &OrderStatusChanged,
    shop_name: &str,
    url: &str,
    attempts: u32,
    error: &str,
) -> Mail {
    let order = env.correlation_id.as_deref().unwrap_or("");
    Mail {
        subject: format!("[payhub] Webhook não entregue: pedido {order} ({})", change.to.as_str()),
        body: format!(
            "Loja: {shop_name}\nPedido: {order} (payhub {})\nEstado: {}\nURL: {url}\nTentativas: {attempts}\nÚltimo erro: {error}\n\n\
             A notificação foi guardada na fila de mensagens mortas (notifier.status.dlq) e pode ser reenviada com\n\
             payhubctl dlq replay notifier.status --id {}\n",
            env.order_id.map(|i| i.to_string()).unwrap_or_default(),
            change.to.as_str(),
            env.id,
        ),
    }
}

/// How a Pago Seguro return's status reads in the e-mail: what the return
/// *says*, with its code.
fn return_status_text(ret: &payhub_core::events::PagoseguroReturned, es: bool) -> String {
    let code = ret.status_code.as_deref().unwrap_or("-");
    let what = match (ret.status.as_str(), es) {
        ("authorised", true) => "aprobada",
        ("authorised", false) => "aprovada",
        ("rejected", true) => "rechazada",
        ("rejected", false) => "recusada",
        (_, true) => "en proceso",
        (_, false) => "em processamento",
    };
    format!("{what} ({code})")
}

/// payhub's own e-mail to the buyer about a verified Pago Seguro return
/// (issue 11 §2), besides Pago Seguro's: the reference, the approval number
/// and the status the return carried. A return never pays an order (its
/// sign does not cover the status), so an approval is "being confirmed".
/// Spanish for pesos, pt-BR otherwise; ends with the "my orders" link.
pub fn pagoseguro_return_buyer(
    order: &str,
    ret: &payhub_core::events::PagoseguroReturned,
    lang: &str,
    order_link: &str,
) -> Mail {
    let es = lang == "es";
    let amount = money_text(ret.amount);
    let status = return_status_text(ret, es);
    let approval = ret
        .approval
        .as_deref()
        .unwrap_or(if es { "no informado" } else { "não informado" });
    if es {
        let (subject, what) = match ret.status.as_str() {
            "authorised" => (
                format!("Pedido {order}: estamos confirmando tu pago con Pago Seguro"),
                "Pago Seguro te devolvió a nosotros con el pago aprobado. Lo estamos confirmando: \
                 el pedido todavía no figura como pagado. La tienda lo confirmará con Pago Seguro \
                 y te avisaremos por correo electrónico."
                    .to_string(),
            ),
            "rejected" => (
                format!("Pedido {order}: Pago Seguro rechazó el pago"),
                "Pago Seguro informó que el pago fue rechazado. El pedido no figura como pagado; \
                 puedes intentarlo de nuevo con otro medio de pago desde el enlace de tu pedido."
                    .to_string(),
            ),
            _ => (
                format!("Pedido {order}: tu pago con Pago Seguro está en proceso"),
                "Pago Seguro informó que el pago está en proceso. El pedido todavía no figura como \
                 pagado; te avisaremos por correo electrónico."
                    .to_string(),
            ),
        };
        Mail {
            subject,
            body: format!(
                "¡Hola, {}!\n\n{what}\n\nPedido: {order}\nReferencia en Pago Seguro: {}\nNúmero de aprobación: {approval}\n\
                 Estado informado por Pago Seguro: {status}\nValor: {amount}\nProductos: {}\n\n\
                 Sigue tu pedido (estado, productos, comprobante):\n{order_link}\n",
                ret.customer_name, ret.reference, ret.summary,
            ),
        }
    } else {
        let (subject, what) = match ret.status.as_str() {
            "authorised" => (
                format!("Pedido {order}: estamos confirmando o seu pagamento com Pago Seguro"),
                "Pago Seguro devolveu você para nós com o pagamento aprovado. Estamos confirmando: \
                 o pedido ainda não consta como pago. A loja vai confirmar com Pago Seguro e \
                 avisaremos você por e-mail."
                    .to_string(),
            ),
            "rejected" => (
                format!("Pedido {order}: Pago Seguro recusou o pagamento"),
                "Pago Seguro informou que o pagamento foi recusado. O pedido não consta como pago; \
                 você pode tentar de novo com outro meio de pagamento pelo link do seu pedido."
                    .to_string(),
            ),
            _ => (
                format!("Pedido {order}: o seu pagamento com Pago Seguro está em processamento"),
                "Pago Seguro informou que o pagamento está em processamento. O pedido ainda não \
                 consta como pago; avisaremos você por e-mail."
                    .to_string(),
            ),
        };
        Mail {
            subject,
            body: format!(
                "Olá, {}!\n\n{what}\n\nPedido: {order}\nReferência no Pago Seguro: {}\nNúmero de aprovação: {approval}\n\
                 Estado informado pelo Pago Seguro: {status}\nValor: {amount}\nItens: {}\n\n\
                 Acompanhe o seu pedido (status, itens, comprovante):\n{order_link}\n",
                ret.customer_name, ret.reference, ret.summary,
            ),
        }
    }
}

/// The shop's admin's copy of a verified Pago Seguro return: what it says,
/// and that payhub did not mark the order paid (the shop confirms in Pago
/// Seguro's back office before shipping).
pub fn pagoseguro_return_admin(
    env: &Envelope,
    order: &str,
    shop_name: &str,
    ret: &payhub_core::events::PagoseguroReturned,
    lang: &str,
) -> Mail {
    let es = lang == "es";
    let status = return_status_text(ret, es);
    let approval = ret.approval.as_deref().unwrap_or("-");
    let id = env.order_id.map(|i| i.to_string()).unwrap_or_default();
    let amount = money_text(ret.amount);
    if es {
        Mail {
            subject: format!("[payhub] Pago Seguro: retorno {status} del pedido {order}, por confirmar"),
            body: format!(
                "Tienda: {shop_name}\nPedido: {order} (payhub {id})\nReferencia en Pago Seguro: {}\n\
                 Número de aprobación: {approval}\nEstado informado por el retorno: {status}\nValor: {amount}\n\
                 Comprador: {} <{}>\n\n\
                 payhub verificó la firma del retorno con la API key de la tienda, la referencia y el valor del pedido.\n\
                 La firma de Pago Seguro no cubre el estado y Pago Seguro no ofrece una consulta de estado:\n\
                 payhub NO marcó el pedido como pagado (sigue esperando el pago). Confirme la transacción en el\n\
                 panel de Pago Seguro antes de enviar el pedido.\nEvento: {}\n",
                ret.reference, ret.customer_name, ret.customer_email, env.id,
            ),
        }
    } else {
        Mail {
            subject: format!("[payhub] Pago Seguro: retorno {status} do pedido {order}, a confirmar"),
            body: format!(
                "Loja: {shop_name}\nPedido: {order} (payhub {id})\nReferência no Pago Seguro: {}\n\
                 Número de aprovação: {approval}\nEstado informado pelo retorno: {status}\nValor: {amount}\n\
                 Comprador: {} <{}>\n\n\
                 payhub verificou a assinatura do retorno com a API key da loja, a referência e o valor do pedido.\n\
                 A assinatura do Pago Seguro não cobre o estado e o Pago Seguro não oferece consulta de estado:\n\
                 payhub NÃO marcou o pedido como pago (segue aguardando pagamento). Confirme a transação no\n\
                 painel do Pago Seguro antes de enviar o pedido.\nEvento: {}\n",
                ret.reference, ret.customer_name, ret.customer_email, env.id,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_core::events::{EventPayload, PagoseguroReturned};
    use payhub_core::{Currency, Money};

    fn returned(status: &str, code: &str, approval: Option<&str>) -> PagoseguroReturned {
        PagoseguroReturned {
            return_id: uuid::Uuid::nil(),
            status: status.into(),
            status_code: Some(code.into()),
            reference: "a857b5721bab1e3a4831".into(),
            approval: approval.map(str::to_string),
            amount: Money::from_minor(7_500_000, Currency::Cop),
            customer_name: "Pedro Pérez".into(),
            customer_email: "pedro@example.com".into(),
            summary: "Camiseta Roja".into(),
        }
    }

    #[test]
    fn an_approved_return_is_told_as_being_confirmed_never_as_paid() {
        let r = returned("authorised", "22", Some("AP-991"));
        for lang in ["es", "pt-BR"] {
            let m = pagoseguro_return_buyer("ps-1", &r, lang, "https://pay.example/my/orders/x/y");
            for want in [
                "a857b5721bab1e3a4831",
                "AP-991",
                "(22)",
                "COP 75000.00",
                "https://pay.example/my/orders/x/y",
            ] {
                assert!(m.body.contains(want), "{lang}: {want} in {}", m.body);
            }
            assert!(m.subject.contains("confirmando"), "{}", m.subject);
            let text = format!("{} {}", m.subject, m.body).to_lowercase();
            for never in ["pago confirmado", "pagamento confirmado", "fue pagado", "foi pago"] {
                assert!(!text.contains(never), "{lang}: {never:?} in {text}");
            }
        }
        let env = payhub_core::Envelope::new(EventPayload::PagoseguroReturned(r.clone()));
        let admin = pagoseguro_return_admin(&env, "ps-1", "Loja", &r, "es");
        assert!(admin.body.contains("NO marcó el pedido como pagado"), "{}", admin.body);
        assert!(admin.body.contains("AP-991"));
    }

    #[test]
    fn a_rejected_or_pending_return_says_so() {
        let m = pagoseguro_return_buyer("ps-2", &returned("rejected", "17", None), "es", "l");
        assert!(
            m.subject.contains("rechazó") && m.body.contains("no informado"),
            "{m:?}",
            m = m.body
        );
        let m = pagoseguro_return_buyer("ps-3", &returned("pending", "4", None), "pt-BR", "l");
        assert!(
            m.subject.contains("em processamento") && m.body.contains("(4)"),
            "{}",
            m.body
        );
    }
}
