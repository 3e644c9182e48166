// Swagger UI for /docs, started from this file (the page's Content-Security-Policy refuses inline
// scripts). The API key goes in through "Authorize" (the X-API-Key scheme of /openapi.json) and is
// sent as that header only: never in a URL, never stored (persistAuthorization off).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout", // no top bar: no field that loads another document
    deepLinking: false,
    queryConfigEnabled: false, // ignore ?url= and other settings in the page's address
    validatorUrl: null, // no badge fetched from a validator service
    persistAuthorization: false,
    withCredentials: false,
  });
});
