"""The HTML pages of the AD CS fake, shaped as Windows' certsrv pages (English and German).

The markers clients parse, as the real pages carry them:

- issued (``certfnsh.asp``): title "Certificate Issued" / "Zertifikat wurde ausgestellt", the links
  ``certnew.cer?ReqID=N&amp;Enc=bin`` and ``...&amp;Enc=b64`` (and ``certnew.p7b?...``), and the
  script line ``location="certnew.cer?ReqID=N&"+getEncoding();``;
- pending: "Certificate Pending" and "Your Request Id is N." / "Ausstehendes Zertifikat" and
  "Ihre Anforderungs-ID ist N.";
- denied: "Certificate Request Denied" and ``The disposition message is "…".`` /
  "Zertifikatanforderung wurde verweigert" and ``Die Dispositionsmeldung ist "…".``;
- error (unknown request id, a request that could not be read): "Error" / "Fehler" with
  "An unexpected error has occurred: …" / "Unerwarteter Fehler: …".

Every page comes with status 200, as IIS serves them; the 500 page is IIS's own.
"""

from __future__ import annotations

from html import escape

LANGUAGES = ("en", "de")

_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "product": "Microsoft Active Directory Certificate Services",
        "home": "Home",
        "welcome": "Welcome",
        "welcome_body": ("Use this Web site to request a certificate for your Web browser, e-mail "
                         "client, or other program. By using a certificate, you can verify your "
                         "identity to people you communicate with over the Web, sign and encrypt "
                         "messages, and, depending upon the type of certificate you request, "
                         "perform other security tasks."),
        "issued": "Certificate Issued",
        "issued_body": "The certificate you requested was issued to you.",
        "der": "DER encoded",
        "b64": "Base 64 encoded",
        "download": "Download certificate",
        "download_chain": "Download certificate chain",
        "pending": "Certificate Pending",
        "pending_body": ("Your certificate request has been received. However, you must wait for "
                         "an administrator to issue the certificate you requested."),
        "request_id": "Your Request Id is {id}.",
        "pending_return": "Please return to this web site in a day or two to retrieve your certificate.",
        "denied": "Certificate Request Denied",
        "denied_body": "Your certificate request was denied.",
        "disposition": 'The disposition message is "{message}".',
        "contact": "Contact your administrator for further information.",
        "error": "Error",
        "error_body": "An unexpected error has occurred: {message}",
    },
    "de": {
        "product": "Microsoft Active Directory-Zertifikatdienste",
        "home": "Startseite",
        "welcome": "Willkommen",
        "welcome_body": ("Verwenden Sie diese Website, um ein Zertifikat für Ihren Webbrowser, "
                         "E-Mail-Client oder ein anderes Programm anzufordern."),
        "issued": "Zertifikat wurde ausgestellt",
        "issued_body": "Das angeforderte Zertifikat wurde für Sie ausgestellt.",
        "der": "DER-codiert",
        "b64": "Base64-codiert",
        "download": "Zertifikat herunterladen",
        "download_chain": "Zertifikatkette herunterladen",
        "pending": "Ausstehendes Zertifikat",
        "pending_body": ("Die Zertifikatanforderung wurde empfangen. Sie müssen jedoch warten, bis "
                         "ein Administrator das angeforderte Zertifikat ausgestellt hat."),
        "request_id": "Ihre Anforderungs-ID ist {id}.",
        "pending_return": ("Kehren Sie in ein oder zwei Tagen zu dieser Website zurück, um das "
                           "Zertifikat abzurufen."),
        "denied": "Zertifikatanforderung wurde verweigert",
        "denied_body": "Die Zertifikatanforderung wurde verweigert.",
        "disposition": 'Die Dispositionsmeldung ist "{message}".',
        "contact": "Wenden Sie sich an den Administrator, um weitere Informationen zu erhalten.",
        "error": "Fehler",
        "error_body": "Unerwarteter Fehler: {message}",
    },
}

UNKNOWN_REQUEST = "Cannot find object or property. 0x80092004 (-2146885628 CRYPT_E_NOT_FOUND)"
UNSUPPORTED_TEMPLATE = ("The requested certificate template is not supported by this CA. "
                        "0x80094800 (-2146875392 CERTSRV_E_UNSUPPORTED_CERT_TYPE)")
NO_TEMPLATE = ("The request contains no certificate template information. 0x80094801 "
               "(-2146875391 CERTSRV_E_NO_CERT_TYPE)")

IIS_500 = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" \
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>500 - Internal server error.</title>
</head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content">
 <div class="content-container"><fieldset>
  <h2>500 - Internal server error.</h2>
  <h3>There is a problem with the resource you are looking for, and it cannot be displayed.</h3>
 </fieldset></div>
</div>
</body>
</html>
"""

IIS_401 = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" \
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>401 - Unauthorized: Access is denied due to invalid credentials.</title>
</head>
<body>
<div id="header"><h1>Server Error</h1></div>
<div id="content">
 <div class="content-container"><fieldset>
  <h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>
  <h3>You do not have permission to view this directory or page using the credentials that you \
supplied.</h3>
 </fieldset></div>
</div>
</body>
</html>
"""


def _page(language: str, title: str, body: str, script: str = "") -> str:
    t = _TEXT[language]
    return (
        "<HTML>\r\n<Head>\r\n"
        '\t<Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">\r\n'
        f"\t<Title>{t['product']}</Title>\r\n</Head>\r\n"
        "<Body BgColor=#FFFFFF>\r\n"
        "<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080>\r\n<TR>\r\n"
        f"\t<TD><Font Color=#FFFFFF><LocID ID=locMSCertSrv><Font Face=\"Arial\" Size=-1><B>"
        f"{t['product']}</B></Font></LocID></Font></TD>\r\n"
        f"\t<TD ID=locHomeAlign Align=Right><A Href=\"/certsrv\"><Font Color=#FFFFFF>"
        f"<LocID ID=locHomeLink>{t['home']}</LocID></Font></A></TD>\r\n</TR>\r\n</Table>\r\n"
        f"<P ID=locPageTitle> <Font Color=#336699><B>{title}</B></Font>\r\n"
        f"{body}\r\n{script}</Body>\r\n</HTML>\r\n"
    )


def welcome(language: str, ca_name: str) -> str:
    t = _TEXT[language]
    return _page(language, t["welcome"], f"<P ID=locInfo>{t['welcome_body']}\r\n"
                                         f"<P>{escape(ca_name)}")


def issued(language: str, req_id: int) -> str:
    t = _TEXT[language]
    links = "".join(
        f"<P><A Href=\"certnew.{ext}?ReqID={req_id}&amp;Enc={enc}\">{label} ({name})</A>\r\n"
        for ext, label in (("cer", t["download"]), ("p7b", t["download_chain"]))
        for enc, name in (("bin", t["der"]), ("b64", t["b64"])))
    script = (
        "<Script Language=\"JavaScript\">\r\n"
        "\tfunction getEncoding() {\r\n"
        "\t\treturn document.all.rbB64Enc.checked ? \"Enc=b64\" : \"Enc=bin\";\r\n\t}\r\n"
        "\tfunction handleGetCert() {\r\n"
        f"\t\tlocation=\"certnew.cer?ReqID={req_id}&\"+getEncoding();\r\n\t}}\r\n"
        "\tfunction handleGetChain() {\r\n"
        f"\t\tlocation=\"certnew.p7b?ReqID={req_id}&\"+getEncoding();\r\n\t}}\r\n"
        "</Script>\r\n")
    body = (f"<P ID=locInfo>{t['issued_body']}\r\n"
            f"<P><Input Type=Radio Name=rbEncoding ID=rbDerEnc Checked>{t['der']} "
            f"<Input Type=Radio Name=rbEncoding ID=rbB64Enc>{t['b64']}\r\n{links}")
    return _page(language, t["issued"], body, script)


def pending(language: str, req_id: int) -> str:
    t = _TEXT[language]
    body = (f"<P ID=locInfoReqIDAndReason>{t['pending_body']}\r\n"
            f"<P>{t['request_id'].format(id=req_id)}\r\n"
            f"<P>{t['pending_return']}")
    return _page(language, t["pending"], body)


def denied(language: str, message: str, req_id: int | None) -> str:
    t = _TEXT[language]
    ident = t["request_id"].format(id=req_id) + "  " if req_id is not None else ""
    reason = t["disposition"].format(message=escape(message, quote=False))
    body = (f"<P ID=locDenied>{t['denied_body']}\r\n"
            f"<P ID=locInfoReqIDAndReason>{ident}{reason}\r\n"
            f"<P>{t['contact']}")
    return _page(language, t["denied"], body)


def error(language: str, message: str) -> str:
    t = _TEXT[language]
    body = f"<P ID=locInfoErr>{t['error_body'].format(message=escape(message, quote=False))}"
    return _page(language, t["error"], body)
