// The device's TLS client certificate as an RFC 9440 Client-Cert header value.
//
// nginx hands the certificate the client proved it holds (the TLS handshake's CertificateVerify)
// to us as PEM in $ssl_client_raw_cert; RFC 9440 wants its DER as an RFC 8941 byte sequence,
// ":base64:". The PEM body already is that base64, so we only drop the armour and the line
// breaks. No certificate: the empty string, and nginx then sends no Client-Cert at all (it never
// passes a header whose value is empty), whatever the device put in its own request.
//
// Used by mdm.conf: js_import mdm_client_cert from .../client_cert.js;
//                   js_set $mdm_client_cert mdm_client_cert.header;

function header(r) {
    var pem = r.variables.ssl_client_raw_cert;
    if (!pem) {
        return '';
    }
    return ':' + pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '') + ':';
}

export default {header};
