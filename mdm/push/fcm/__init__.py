"""The FCM HTTP v1 client (DESIGN §6): the service account and its OAuth2 access token
(``oauth``), Google's rate limits (``limits``) and the sender (``client.FcmClient``)."""
