//! The checkout's words in Portuguese (Brazil) and Spanish, and how the
//! page's language is chosen: the buyer's explicit choice (`?lang=`), then
//! the browser's `Accept-Language`, then the shop's setting.

/// A language the checkout speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    PtBr,
    Es,
}

impl Lang {
    pub fn tag(self) -> &'static str {
        match self {
            Lang::PtBr => "pt-BR",
            Lang::Es => "es",
        }
    }

    /// `pt-BR`, `pt`, `es`, `es-CO`... (case-insensitive); anything else is none.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("pt") {
            Some(Lang::PtBr)
        } else if primary.eq_ignore_ascii_case("es") {
            Some(Lang::Es)
        } else {
            None
        }
    }

    /// The buyer's choice, else the browser's most preferred language the
    /// checkout speaks (by q-value), else the shop's default.
    pub fn choose(explicit: Option<&str>, accept_language: Option<&str>, shop_default: &str) -> Lang {
        if let Some(l) = explicit.and_then(Lang::parse) {
            return l;
        }
        if let Some(header) = accept_language {
            let mut best: Option<(f32, Lang)> = None;
            for part in header.split(',') {
                let mut pieces = part.split(';');
                let tag = pieces.next().unwrap_or_default();
                let q = pieces
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                if let Some(l) = Lang::parse(tag)
                    && q > 0.0
                    && best.is_none_or(|(bq, _)| q > bq)
                {
                    best = Some((q, l));
                }
            }
            if let Some((_, l)) = best {
                return l;
            }
        }
        Lang::parse(shop_default).unwrap_or(Lang::PtBr)
    }

    pub fn text(self) -> &'static Text {
        match self {
            Lang::PtBr => &PT_BR,
            Lang::Es => &ES,
        }
    }

    /// Money as the language writes it: `R$ 1.234,56`.
    pub fn money(self, minor: i64, currency: &str) -> String {
        let exponent = payhub_core::Currency::parse(currency).map_or(2, |c| c.exponent());
        let symbol = match currency {
            "BRL" => "R$",
            "HNL" => "L",
            "USD" => "US$",
            "NIO" => "C$",
            "COP" => "COL$",
            other => other,
        };
        let negative = minor < 0;
        let minor = minor.unsigned_abs();
        let scale = 10u64.pow(exponent);
        let (whole, frac) = (minor / scale, minor % scale);
        let digits = whole.to_string();
        let mut grouped = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push('.');
            }
            grouped.push(ch);
        }
        let sign = if negative { "-" } else { "" };
        if exponent == 0 {
            format!("{sign}{symbol} {grouped}")
        } else {
            format!("{sign}{symbol} {grouped},{frac:0width$}", width = exponent as usize)
        }
    }
}

/// Every word on the checkout's pages. Both languages have every key (the
/// type makes sure of it).
pub struct Text {
    pub pay_title: &'static str,
    pub order: &'static str,
    pub items: &'static str,
    pub qty: &'static str,
    pub freight: &'static str,
    pub discount: &'static str,
    pub tax: &'static str,
    pub total: &'static str,
    pub pix_heading: &'static str,
    pub pix_instructions: &'static str,
    pub pix_qr_alt: &'static str,
    pub pix_code_label: &'static str,
    pub copy: &'static str,
    pub copied: &'static str,
    pub expires_in: &'static str,
    pub minutes: &'static str,
    pub preparing: &'static str,
    pub status_label: &'static str,
    pub status_waiting: &'static str,
    pub status_paid: &'static str,
    pub status_failed: &'static str,
    pub status_expired: &'static str,
    pub status_confirming: &'static str,
    pub refresh: &'static str,
    pub refresh_hint: &'static str,
    pub card_heading: &'static str,
    pub card_number: &'static str,
    pub card_expiry: &'static str,
    pub card_expiry_hint: &'static str,
    pub card_cvv: &'static str,
    pub card_holder: &'static str,
    pub billing_address: &'static str,
    pub billing_city: &'static str,
    pub billing_state: &'static str,
    pub billing_country: &'static str,
    pub pay_card: &'static str,
    pub card_secure_note: &'static str,
    pub form_errors: &'static str,
    pub error_number: &'static str,
    pub error_expiry: &'static str,
    pub error_cvv: &'static str,
    pub error_holder: &'static str,
    pub error_billing: &'static str,
    pub error_session: &'static str,
    pub card_unavailable: &'static str,
    pub pagoseguro_title: &'static str,
    pub pagoseguro_body: &'static str,
    pub pagoseguro_button: &'static str,
    pub pagoseguro_unavailable: &'static str,
    pub pagoseguro_declined_body: &'static str,
    pub pagoseguro_retry: &'static str,
    pub paid_title: &'static str,
    pub paid_body: &'static str,
    pub declined_title: &'static str,
    pub declined_body: &'static str,
    pub expired_title: &'static str,
    pub expired_body: &'static str,
    pub confirming_title: &'static str,
    pub confirming_body: &'static str,
    pub review_title: &'static str,
    pub review_body: &'static str,
    pub refunded_title: &'static str,
    pub refunded_body: &'static str,
    pub back_to_shop: &'static str,
    pub redirecting: &'static str,
    pub cancel: &'static str,
    pub not_found_title: &'static str,
    pub not_found_body: &'static str,
    pub language: &'static str,
    pub secured_by: &'static str,
    pub my_order_title: &'static str,
    pub method_label: &'static str,
    pub method_pix: &'static str,
    pub method_card: &'static str,
    pub method_redirect: &'static str,
    pub receipt_heading: &'static str,
    pub receipt_a4: &'static str,
    pub receipt_80mm: &'static str,
    pub history_heading: &'static str,
    pub order_not_found_title: &'static str,
    pub order_not_found_body: &'static str,
    pub status_received: &'static str,
    pub status_partially_refunded: &'static str,
    pub status_refunded: &'static str,
    pub status_fulfilling: &'static str,
    pub status_shipped: &'static str,
    pub status_delivered: &'static str,
    pub status_returned: &'static str,
    pub status_cancelled: &'static str,
}

pub static PT_BR: Text = Text {
    pay_title: "Pagamento",
    order: "Pedido",
    items: "Itens",
    qty: "Qtd.",
    freight: "Frete",
    discount: "Desconto",
    tax: "Impostos",
    total: "Total",
    pix_heading: "Pague com PIX",
    pix_instructions: "Abra o app do seu banco, escolha PIX e leia o QR code ou cole o código abaixo.",
    pix_qr_alt: "QR code PIX deste pedido",
    pix_code_label: "PIX copia e cola",
    copy: "Copiar código",
    copied: "Código copiado",
    expires_in: "Expira em",
    minutes: "min",
    preparing: "Estamos gerando o seu código PIX. Isso leva poucos segundos.",
    status_label: "Situação",
    status_waiting: "Aguardando pagamento",
    status_paid: "Pago",
    status_failed: "Pagamento recusado",
    status_expired: "Expirado",
    status_confirming: "Em confirmação",
    refresh: "Atualizar situação",
    refresh_hint: "Com JavaScript desligado, a situação não se atualiza sozinha: use o botão.",
    card_heading: "Pague com cartão",
    card_number: "Número do cartão",
    card_expiry: "Validade",
    card_expiry_hint: "MM/AA",
    card_cvv: "Código de segurança (CVV)",
    card_holder: "Nome impresso no cartão",
    billing_address: "Endereço de cobrança",
    billing_city: "Cidade",
    billing_state: "Estado",
    billing_country: "País (código de 2 letras)",
    pay_card: "Pagar",
    card_secure_note: "Os dados do cartão vão direto para o processador de pagamento e não são guardados.",
    form_errors: "Confira os campos marcados:",
    error_number: "Número do cartão inválido.",
    error_expiry: "Validade inválida ou vencida (use MM/AA).",
    error_cvv: "Código de segurança inválido.",
    error_holder: "Informe o nome impresso no cartão.",
    error_billing: "Confira o endereço de cobrança.",
    error_session: "O formulário expirou. Recarregue a página e tente de novo.",
    card_unavailable: "Este pedido já não aceita pagamento com cartão.",
    pagoseguro_title: "Pagar com Pago Seguro",
    pagoseguro_body: "Você será levado à página segura do Pago Seguro para pagar. Se nada acontecer, use o botão.",
    pagoseguro_button: "Ir para o Pago Seguro",
    pagoseguro_unavailable: "O pagamento com Pago Seguro não está disponível agora. Tente de novo em instantes.",
    pagoseguro_declined_body: "O Pago Seguro informou que a transação foi recusada. Confira os dados com o seu banco e tente de novo, ou volte à loja para escolher outra forma de pagamento. Se o valor foi cobrado, a loja confirmará o pagamento por e-mail.",
    pagoseguro_retry: "Tentar de novo no Pago Seguro",
    paid_title: "Pagamento confirmado",
    paid_body: "Recebemos o seu pagamento. A loja já foi avisada.",
    declined_title: "Pagamento recusado",
    declined_body: "O pagamento não foi aprovado e nada foi cobrado. Confira os dados com o seu banco ou volte à loja para tentar outra forma de pagamento.",
    expired_title: "Prazo de pagamento encerrado",
    expired_body: "Este pedido expirou sem pagamento. Volte à loja para fazer um novo pedido.",
    confirming_title: "Pagamento em confirmação",
    confirming_body: "Estamos confirmando o pagamento com o processador. Esta página se atualiza sozinha.",
    review_title: "Pagamento em análise",
    review_body: "O pagamento recebido está sendo analisado. A loja entrará em contato.",
    refunded_title: "Pagamento devolvido",
    refunded_body: "O valor deste pedido foi devolvido (total ou parcialmente).",
    back_to_shop: "Voltar para a loja",
    redirecting: "Você será levado de volta à loja em instantes.",
    cancel: "Cancelar e voltar para a loja",
    not_found_title: "Página de pagamento não encontrada",
    not_found_body: "O link está incompleto ou expirou. Volte à loja e comece de novo.",
    language: "Idioma",
    secured_by: "Pagamento processado por payhub",
    my_order_title: "Meu pedido",
    method_label: "Forma de pagamento",
    method_pix: "PIX",
    method_card: "Cartão",
    method_redirect: "Pago Seguro",
    receipt_heading: "Comprovante de pagamento",
    receipt_a4: "Baixar comprovante (PDF, A4)",
    receipt_80mm: "Baixar comprovante (PDF, 80 mm)",
    history_heading: "Histórico",
    order_not_found_title: "Pedido não encontrado",
    order_not_found_body: "O link está incompleto ou não é deste pedido. Use o link do e-mail da loja.",
    status_received: "Pedido recebido",
    status_partially_refunded: "Reembolsado em parte",
    status_refunded: "Reembolsado",
    status_fulfilling: "Em preparação para envio",
    status_shipped: "Enviado",
    status_delivered: "Entregue",
    status_returned: "Devolvido",
    status_cancelled: "Cancelado",
};

pub static ES: Text = Text {
    pay_title: "Pago",
    order: "Pedido",
    items: "Artículos",
    qty: "Cant.",
    freight: "Envío",
    discount: "Descuento",
    tax: "Impuestos",
    total: "Total",
    pix_heading: "Paga con PIX",
    pix_instructions: "Abre la app de tu banco, elige PIX y escanea el código QR o pega el código de abajo.",
    pix_qr_alt: "Código QR PIX de este pedido",
    pix_code_label: "Código PIX para copiar y pegar",
    copy: "Copiar código",
    copied: "Código copiado",
    expires_in: "Vence en",
    minutes: "min",
    preparing: "Estamos generando tu código PIX. Toma unos segundos.",
    status_label: "Estado",
    status_waiting: "Esperando el pago",
    status_paid: "Pagado",
    status_failed: "Pago rechazado",
    status_expired: "Vencido",
    status_confirming: "En confirmación",
    refresh: "Actualizar estado",
    refresh_hint: "Con JavaScript desactivado, el estado no se actualiza solo: usa el botón.",
    card_heading: "Paga con tarjeta",
    card_number: "Número de la tarjeta",
    card_expiry: "Vencimiento",
    card_expiry_hint: "MM/AA",
    card_cvv: "Código de seguridad (CVV)",
    card_holder: "Nombre impreso en la tarjeta",
    billing_address: "Dirección de facturación",
    billing_city: "Ciudad",
    billing_state: "Departamento o estado",
    billing_country: "País (código de 2 letras)",
    pay_card: "Pagar",
    card_secure_note: "Los datos de la tarjeta van directo al procesador de pagos y no se guardan.",
    form_errors: "Revisa los campos marcados:",
    error_number: "Número de tarjeta inválido.",
    error_expiry: "Vencimiento inválido o pasado (usa MM/AA).",
    error_cvv: "Código de seguridad inválido.",
    error_holder: "Escribe el nombre impreso en la tarjeta.",
    error_billing: "Revisa la dirección de facturación.",
    error_session: "El formulario venció. Recarga la página e inténtalo de nuevo.",
    card_unavailable: "Este pedido ya no acepta pagos con tarjeta.",
    pagoseguro_title: "Pagar con Pago Seguro",
    pagoseguro_body: "Te llevaremos a la página segura de Pago Seguro para pagar. Si no pasa nada, usa el botón.",
    pagoseguro_button: "Ir a Pago Seguro",
    pagoseguro_unavailable: "El pago con Pago Seguro no está disponible ahora. Inténtalo de nuevo en unos instantes.",
    pagoseguro_declined_body: "Pago Seguro informó que la transacción fue rechazada. Revisa los datos con tu banco e inténtalo de nuevo, o vuelve a la tienda para elegir otro medio de pago. Si el valor fue cobrado, la tienda confirmará el pago por correo.",
    pagoseguro_retry: "Intentar de nuevo en Pago Seguro",
    paid_title: "Pago confirmado",
    paid_body: "Recibimos tu pago. La tienda ya fue avisada.",
    declined_title: "Pago rechazado",
    declined_body: "El pago no fue aprobado y no se cobró nada. Revisa los datos con tu banco o vuelve a la tienda para intentar otro medio de pago.",
    expired_title: "Plazo de pago vencido",
    expired_body: "Este pedido venció sin pago. Vuelve a la tienda para hacer un pedido nuevo.",
    confirming_title: "Pago en confirmación",
    confirming_body: "Estamos confirmando el pago con el procesador. Esta página se actualiza sola.",
    review_title: "Pago en revisión",
    review_body: "El pago recibido está en revisión. La tienda se pondrá en contacto.",
    refunded_title: "Pago devuelto",
    refunded_body: "El valor de este pedido fue devuelto (total o parcialmente).",
    back_to_shop: "Volver a la tienda",
    redirecting: "En unos instantes volverás a la tienda.",
    cancel: "Cancelar y volver a la tienda",
    not_found_title: "Página de pago no encontrada",
    not_found_body: "El enlace está incompleto o venció. Vuelve a la tienda y empieza de nuevo.",
    language: "Idioma",
    secured_by: "Pago procesado por payhub",
    my_order_title: "Mi pedido",
    method_label: "Medio de pago",
    method_pix: "PIX",
    method_card: "Tarjeta",
    method_redirect: "Pago Seguro",
    receipt_heading: "Comprobante de pago",
    receipt_a4: "Descargar comprobante (PDF, A4)",
    receipt_80mm: "Descargar comprobante (PDF, 80 mm)",
    history_heading: "Historial",
    order_not_found_title: "Pedido no encontrado",
    order_not_found_body: "El enlace está incompleto o no es de este pedido. Usa el enlace del correo de la tienda.",
    status_received: "Pedido recibido",
    status_partially_refunded: "Reembolsado en parte",
    status_refunded: "Reembolsado",
    status_fulfilling: "En preparación para el envío",
    status_shipped: "Enviado",
    status_delivered: "Entregado",
    status_returned: "Devuelto",
    status_cancelled: "Cancelado",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_is_the_buyers_then_the_browsers_then_the_shops() {
        assert_eq!(Lang::choose(Some("es"), Some("pt-BR"), "pt-BR"), Lang::Es);
        assert_eq!(Lang::choose(None, Some("es-CO,es;q=0.9,en;q=0.5"), "pt-BR"), Lang::Es);
        assert_eq!(Lang::choose(None, Some("en-US,es;q=0.4,pt;q=0.8"), "es"), Lang::PtBr);
        assert_eq!(Lang::choose(None, Some("en-US,fr"), "es"), Lang::Es);
        assert_eq!(Lang::choose(None, Some("es;q=0"), "pt-BR"), Lang::PtBr);
        assert_eq!(Lang::choose(Some("de"), None, "xx"), Lang::PtBr);
    }

    #[test]
    fn money_is_written_as_the_language_writes_it() {
        assert_eq!(Lang::PtBr.money(123_456, "BRL"), "R$ 1.234,56");
        assert_eq!(Lang::Es.money(15_000, "HNL"), "L 150,00");
        assert_eq!(Lang::Es.money(5, "USD"), "US$ 0,05");
        assert_eq!(Lang::PtBr.money(100_000_000, "BRL"), "R$ 1.000.000,00");
        assert_eq!(Lang::Es.money(7_500_000, "COP"), "COL$ 75.000,00");
    }
}
