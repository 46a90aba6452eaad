// The pages the e-mails link to: confirm a sign-up, reset a password, confirm a new
// e-mail address; and the landing page. They use the public GraphQL API only, like the
// dashboard, so they have no privileges of their own.
"use strict";

const page = document.getElementById("page");
const params = new URLSearchParams(location.search);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

async function graphql(query, variables) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors && body.errors.length) {
    const error = body.errors[0];
    const reason = error.extensions && (error.extensions.reason || error.extensions.code);
    throw new Error(reason ? `${error.message} (${reason})` : error.message);
  }
  return body.data;
}

function show(title, ...content) {
  page.replaceChildren(el("h1", {}, title), ...content);
}

function form(title, intro, fields, submitLabel, action) {
  const status = el("p", { id: "status", role: "status" });
  const inputs = {};
  const formNode = el("form", { id: "form" }, el("p", {}, intro));
  for (const field of fields) {
    const input = el("input", {
      id: field.id, name: field.id, type: field.type || "text",
      autocomplete: field.autocomplete || "off", required: "",
    });
    if (field.minlength) input.setAttribute("minlength", field.minlength);
    inputs[field.id] = input;
    formNode.append(el("label", { for: field.id }, field.label), input);
  }
  const button = el("button", { id: "submit", type: "submit" }, submitLabel);
  formNode.append(button, status);
  formNode.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    status.className = "";
    status.textContent = "Working…";
    const values = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, v.value]));
    try {
      const message = await action(values);
      show(title, el("p", { id: "done", class: "done" }, message),
        el("p", {}, el("a", { href: "/" }, "Back to Aula")));
    } catch (error) {
      status.className = "error";
      status.textContent = error.message;
      button.disabled = false;
    }
  });
  show(title, formNode);
}

function missing(title) {
  show(title, el("p", { class: "error" },
    "This link is incomplete: open the whole link from the e-mail."));
}

// The pages an e-mail links to, each as data: the link's query parameters it needs
// (a link missing one is incomplete), its form, and the one mutation it sends with
// the form's values and the link's parameters.
const LINK_PAGES = {
  "/confirm-sign-up": {
    title: "Finish your sign-up",
    needs: ["token"],
    intro: "Choose your name, password and institution.",
    fields: [
      { id: "email", label: "E-mail address you signed up with", type: "email", autocomplete: "email" },
      { id: "name", label: "Your name", autocomplete: "name" },
      { id: "password", label: "Password (at least 8 characters)", type: "password", autocomplete: "new-password", minlength: 8 },
      { id: "institutionName", label: "Institution name", autocomplete: "organization" },
    ],
    submit: "Finish sign-up",
    mutation: "mutation($input: ConfirmSignUpInput!) { confirmSignUp(input: $input) { userId } }",
    input: (v, { token }) =>
      ({ email: v.email, token, name: v.name, password: v.password, institutionName: v.institutionName }),
    done: "Your account is ready. You can sign in now.",
  },
  "/reset-password": {
    title: "Choose a new password",
    needs: ["token"],
    intro: "The link works once.",
    fields: [
      { id: "email", label: "E-mail address of the account", type: "email", autocomplete: "email" },
      { id: "newPassword", label: "New password (at least 8 characters)", type: "password", autocomplete: "new-password", minlength: 8 },
    ],
    submit: "Set password",
    mutation: "mutation($input: ResetPasswordInput!) { resetPassword(input: $input) { id } }",
    input: (v, { token }) => ({ email: v.email, token, newPassword: v.newPassword }),
    done: "Your password was changed. Sign in with the new one; earlier sessions have ended.",
  },
  "/confirm-email": {
    title: "Confirm your new e-mail address",
    needs: ["token", "user"],
    intro: "Confirm to use this address for your Aula account.",
    fields: [],
    submit: "Confirm address",
    mutation: "mutation($input: ConfirmEmailChangeInput!) { confirmEmailChange(input: $input) { id } }",
    input: (_, { token, user }) => ({ userId: user, token }),
    done: "Your e-mail address was changed. Sign in with the new address.",
  },
};

// A link's `user` is an id: a damaged one is said here, not by the API's parser.
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function linkPage(spec) {
  const link = Object.fromEntries(spec.needs.map((name) => [name, params.get(name)]));
  if (spec.needs.some((name) => !link[name])) return missing(spec.title);
  if (link.user !== undefined && !UUID_RE.test(link.user)) {
    return show(spec.title, el("p", { class: "error" },
      "This link is damaged: open the whole link from the e-mail."));
  }
  form(spec.title, spec.intro, spec.fields, spec.submit, async (values) => {
    await graphql(spec.mutation, { input: spec.input(values, link) });
    return spec.done;
  });
}

const routes = {
  ...Object.fromEntries(Object.entries(LINK_PAGES).map(([path, spec]) => [path, () => linkPage(spec)])),
  "/": () => {
    show("Aula",
      el("p", {}, "The back office of Aula is running."),
      el("ul", {},
        el("li", {}, el("a", { href: "/admin" }, "Admin dashboard"), " (platform administrators and institution staff)"),
        el("li", {}, el("a", { href: "/graphql" }, "GraphQL API"), " (GraphiQL)"),
      ),
      el("p", {}, "First run? Create an administrator: ", el("code", {}, "aula admin create --email you@example.org")));
  },
};

(routes[location.pathname] || routes["/"])();
