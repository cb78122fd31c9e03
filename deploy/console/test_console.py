# deploy/console/test_console.py — the console walked in Debian's Chromium through Playwright (run by deploy/console/e2e.sh).
#
# Against a running command-api, projector and finalizer (SETTLE_API, SETTLE_ADMIN_TOKEN) it
# provisions demo tenants through the API — an exchange with short dispute and top-up windows, a
# fund with two connections, another fund, an auditor — stages a settlement, has the fund dispute
# it, and then, in the browser: the operator signs in, finds the staged settlement, opens its
# audit timeline, closes the dispute through the confirmation step and sees the next settlement
# carry the closure; the auditor sees the same timeline with no forms; a member of the fund sees
# its own settlement, a member of another enterprise gets 404 for the same URL. Every page's
# screenshot goes to SETTLE_SCREENSHOTS. Exit status 0 only if every check passed.
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from playwright.sync_api import expect, sync_playwright

API = os.environ["SETTLE_API"]
ADMIN = os.environ["SETTLE_ADMIN_TOKEN"]
SHOTS = os.environ.get("SETTLE_SCREENSHOTS", "target/console-screenshots")
CHROMIUM = os.environ.get("SETTLE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def say(message):
    print(f"console-e2e: {message}", file=sys.stderr, flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def call(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, (json.loads(text) if text else None)


def ok(method, path, token, body=None):
    status, answer = call(method, path, token, body)
    check(200 <= status < 300, f"{method} {path}: {status} {answer}")
    return answer


def admin(method, path, body=None):
    return ok(method, "/api/admin/v1" + path, ADMIN, {} if body is None and method != "GET" else body)


class Tenant:
    def __init__(self, name):
        self.id = admin("POST", "/enterprises", {"name": name, "oesLicense": True})["enterprise"]["id"]
        self.token = admin("POST", "/users", {"name": f"{name} member", "enterpriseIds": [self.id]})["accessToken"]
        self.key = Ed25519PrivateKey.generate()
        public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        admin("POST", f"/enterprises/{self.id}/keys", {"publicKey": public})
        self.nonces = 0

    def signed(self, path, body, twin=None):
        """A signed request: the route's signing twin, an Ed25519 signature, the request."""
        self.nonces += 1
        body = dict(body, nonce=f"{self.id[:8]}-{self.nonces}")
        payload = ok("POST", twin or path + "/signing", self.token, body)["payload"]
        signature = self.key.sign(payload.encode()).hex()
        return ok("POST", path, self.token, dict(body, payload=payload, signature=signature))


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_for(what, probe, seconds=40):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def partner_read(exchange, settlement):
    status, body = call("GET", f"/api/network/v1/enterprises/{exchange.id}/partners/settlements/{settlement}", exchange.token)
    return body if status == 200 else None


def provision():
    say("provisioning demo tenants through the API")
    exchange = Tenant("Console Exchange")
    partner = admin("POST", f"/enterprises/{exchange.id}/partner", {
        "name": "Console Exchange", "broker": False, "clientDisputeWindowMinutes": 0.1,
        "topUpWindowMinutes": 0.05, "amountFormat": "decimal"})["partner"]["id"]
    admin("POST", f"/enterprises/{exchange.id}/deposits", {"currency": "BTC", "quantity": "100000000", "externalId": "x-dep"})
    fund = Tenant("Console Fund")
    admin("POST", f"/enterprises/{fund.id}/client")
    admin("POST", f"/enterprises/{fund.id}/deposits", {"currency": "BTC", "quantity": "100000000", "externalId": "f-dep"})
    clients = f"/api/network/v1/enterprises/{fund.id}/clients"
    desks = []
    for name in ("desk-a", "desk-b"):
        connection = fund.signed(f"{clients}/connections", {"partnerId": partner, "name": name, "connectionKey": f"console-{name}"})["connection"]["id"]
        fund.signed(f"{clients}/connections/{connection}/allocations",
                    {"amount": {"currency": "BTC", "quantity": "0.2"}, "clientExternalId": f"alloc-{name}"})
        desks.append(connection)
    other = Tenant("Other Fund")
    admin("POST", f"/enterprises/{other.id}/client")
    auditor = admin("POST", "/users", {"name": "fund auditor", "enterpriseIds": [fund.id], "auditor": True})["accessToken"]
    return exchange, fund, other, auditor, desks


def stage(exchange, external, amounts):
    body = {"externalId": external, "settlementAmounts": amounts, "cutoffAt": now()}
    return exchange.signed(f"/api/network/v2/enterprises/{exchange.id}/partners/settlements", body,
                           twin=f"/api/network/v1/enterprises/{exchange.id}/partners/settlements-signing")["settlement"]["id"]


def shot(page, name, full_page=True):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=full_page)


def sign_in(page, token):
    page.goto(f"{API}/console/sign-in")
    if not os.path.exists(os.path.join(SHOTS, "sign-in.png")):
        shot(page, "sign-in")
    field = page.get_by_label("Access token")
    field.fill(token)
    field.press("Enter")  # the keyboard submits the form
    page.wait_for_url("**/console/settlements")


def form_count(page):
    return page.locator("form[method=post]").count()


def timeline_rows(page):
    rows = page.locator("table.timeline tbody tr:not(.detail)")
    return [" ".join(rows.nth(i).locator("td").nth(k).inner_text() for k in (0, 1, 2)) for i in range(rows.count())]


def main():
    os.makedirs(SHOTS, exist_ok=True)
    exchange, fund, other, auditor, (desk_a, desk_b) = provision()
    clients = f"/api/network/v1/enterprises/{fund.id}/clients"
    s1 = stage(exchange, "day-1", {desk_a: {"BTC": "-0.05"}, desk_b: {"BTC": "0.02"}})
    dispute = fund.signed(f"{clients}/settlements/{s1}/disputes",
                          {"connectionId": desk_a, "reason": "we lost 0.01 only", "expectedTransfers": {"BTC": "-0.01"}})["dispute"]["id"]
    say(f"settlement day-1 {s1} staged, dispute {dispute} raised")
    wait_for("the read models to show day-1", lambda: partner_read(exchange, s1))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)

        # --- the operator -----------------------------------------------------------------
        operator = browser.new_context(viewport={"width": 1280, "height": 900})
        page = operator.new_page()
        sign_in(page, ADMIN)
        expect(page.get_by_role("heading", name="Settlements")).to_be_visible()
        page.get_by_label("Partner").select_option(label="Console Exchange")
        page.get_by_label("External id").fill("day-1")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_load_state()
        shot(page, "settlements")
        page.get_by_role("link", name="day-1").click()
        page.wait_for_url(f"**/console/settlements/{s1}")
        expect(page.get_by_role("heading", name="Audit timeline")).to_be_visible()
        operator_timeline = timeline_rows(page)
        check(any("SettlementStaged" in r for r in operator_timeline), f"the timeline shows the staging: {operator_timeline}")
        check(any("DisputeRaised" in r for r in operator_timeline), f"the timeline shows the dispute: {operator_timeline}")
        check(page.locator("table.timeline").get_by_text("valid", exact=True).count() >= 2, "signatures re-verified as valid")
        shot(page, "settlement-operator")
        say(f"operator: day-1's timeline has {len(operator_timeline)} events, signatures valid")

        # The closure needs the dispute window closed (finalization withholds desk-a).
        wait_for("day-1 to be finalized", lambda: (partner_read(exchange, s1) or {}).get("settlement", {}).get("phase") in ("toppingUp", "executing", "done"))
        page.reload()
        page.get_by_role("link", name="Close…").click()
        expect(page.get_by_role("heading", name="Close dispute")).to_be_visible()
        page.get_by_label("Notes (required)").fill("agreed with the fund: 0.02")
        page.get_by_label("Currency 1").select_option("BTC")
        page.get_by_label("Amount 1").fill("-0.02")
        shot(page, "close-form")
        page.get_by_role("button", name="Review closure").click()
        expect(page.get_by_role("heading", name="Confirm the closure")).to_be_visible()
        shown = json.loads(page.locator("pre.request").inner_text())
        check(shown == {"notes": "agreed with the fund: 0.02", "adjustedTransfers": {"BTC": "-0.02"}},
              f"the confirmation shows the exact request: {shown}")
        check("-2000000" in page.locator("table.list").inner_text(), "the confirmation reads -0.02 BTC as -2000000 base units")
        shot(page, "close-review")
        page.get_by_role("button", name="Submit closure").click()
        page.wait_for_url(lambda url: f"/console/settlements/{s1}" in url and "notice=closed" in url)
        expect(page.get_by_role("status")).to_contain_text("dispute is closed")
        shot(page, "settlement-closed")
        say("operator: the dispute is closed through the confirmation step")

        # The next settlement carries the closure.
        s2 = stage(exchange, "day-2", {desk_b: {"BTC": "0.01"}})
        wait_for("day-2 to carry the closure", lambda: (partner_read(exchange, s2) or {}).get("settlingDisputes"))
        page.goto(f"{API}/console/settlements/{s2}")
        expect(page.get_by_role("heading", name="Closed disputes this settlement carries")).to_be_visible()
        check(dispute in page.inner_text("main"), "day-2's page names the carried dispute")
        shot(page, "settlement-carrying")
        page.goto(f"{API}/console/disputes")
        expect(page.get_by_role("heading", name="Disputes", exact=True)).to_be_visible()
        shot(page, "disputes")
        page.goto(f"{API}/console/operations")
        expect(page.get_by_role("heading", name="Consumers and partitions")).to_be_visible()
        check("projector-read-models" in page.inner_text("main"), "the partitions are listed")
        shot(page, "operations")
        wait_for("day-1 to complete", lambda: (partner_read(exchange, s1) or {}).get("settlement", {}).get("status") == "completed")
        page.goto(f"{API}/console/settlements/{s1}")
        operator_timeline = timeline_rows(page)
        page.set_viewport_size({"width": 1280, "height": 1000})
        shot(page, "settlement", full_page=False)
        page.emulate_media(media="print")
        check(not page.locator("header.top").is_visible(), "print hides the navigation")
        shot(page, "settlement-print")
        page.emulate_media(media="screen")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/console/sign-in")
        say("operator: day-2 carries the closure; disputes, operations, print layout; signed out")

        # --- the auditor: the same timeline, read-only ------------------------------------
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sign_in(page, auditor)
        page.goto(f"{API}/console/settlements/{s1}")
        expect(page.get_by_role("heading", name="Audit timeline")).to_be_visible()
        check(timeline_rows(page) == operator_timeline, "the auditor sees the operator's timeline")
        check(form_count(page) == 1, "the auditor's only form is signing out")
        check(page.get_by_role("link", name="Close…").count() == 0, "no closure for an auditor")
        check(page.get_by_role("button", name="Retry execution now").count() == 0, "no retry for an auditor")
        shot(page, "settlement-auditor")
        response = page.goto(f"{API}/console/operations")
        check(response.status == 403, f"operations are the operator's: {response.status}")
        context.close()
        say("auditor: the same timeline, no forms; operations refused")

        # --- enterprise members: only their own enterprise ---------------------------------
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sign_in(page, fund.token)
        response = page.goto(f"{API}/console/settlements/{s1}")
        check(response.status == 200, f"the fund's member sees its settlement: {response.status}")
        check(page.locator("table.timeline").count() == 0, "a member without the auditor flag sees no audit timeline")
        check(form_count(page) == 1, "a member has no operator forms")
        shot(page, "settlement-member")
        page.goto(f"{API}/console/settlements")
        options = page.get_by_label("Enterprise").locator("option").all_inner_texts()
        check(options and all("Console Fund" in o for o in options), f"only the fund is offered: {options}")
        context.close()

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        sign_in(page, other.token)
        response = page.goto(f"{API}/console/settlements/{s1}")
        check(response.status in (403, 404), f"another enterprise's settlement is hidden: {response.status}")
        check("day-1" not in page.inner_text("main"), "nothing of it shows")
        shot(page, "member-other-enterprise")
        response = page.goto(f"{API}/console/settlements?view={exchange.id}:partner")
        check(response.status in (403, 404), f"another enterprise's list is hidden: {response.status}")
        context.close()
        say("members: the fund sees its settlement; another enterprise gets 404")
        browser.close()
    say("all console checks passed")


if __name__ == "__main__":
    main()
