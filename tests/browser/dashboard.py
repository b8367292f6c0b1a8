#!/usr/bin/python3
"""Drive the vmvpn dashboard in Debian's headless Chromium (chromedriver + Selenium) for
tests/tests/dashboard.rs. Commands come one per line on stdin, each answered by one JSON
line on stdout:

  load URL            open the page; wait until it has rendered an overview
  look                the heat-map cells, topology hosts and links, alerts, and console errors
  wait-down HOST S    wait up to S seconds, without reloading, for HOST to be down or gone
  wait-up HOST S      wait up to S seconds, without reloading, for HOST to be shown up
  click-cell A B      click the heat-map cell A -> B; wait for its series charts
  shot PATH           save a screenshot (PNG)
  quit

Chromium runs as root here only with --no-sandbox; the background-networking flags keep
it from trying to reach Google's hosts from a closed network."""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def start(profile):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
              "--window-size=1500,1900", "--user-data-dir=" + profile]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


LOOK = """
const q = s => [...document.querySelectorAll(s)];
return {
  rendered_at: document.body.dataset.renderedAt || null,
  marker: window.__vmvpnTestMarker || null,
  live: document.getElementById('live').dataset.state,
  lan: document.getElementById('lan').value,
  cells: q('#heatmap rect.cell:not(.self)').map(r => ({
    from: r.dataset.from, to: r.dataset.to, cls: r.getAttribute('class'),
    title: (r.querySelector('title') || {}).textContent || ''})),
  hosts: q('#topology g.host').map(g => ({
    name: g.dataset.host, state: g.dataset.state, forwarder: g.dataset.forwarder === 'true'})),
  links: q('#topology line.tunnel').map(l => ({
    from: l.dataset.from, to: l.dataset.to, cls: l.getAttribute('class')})),
  subnets: q('#topology .subnet-label').map(t => t.textContent),
  vms: q('#vms tr').length - 1,
  services_shown: !document.getElementById('services-section').hidden,
  services: q('#services tr[data-service]').map(tr => ({
    service: tr.dataset.service, backend: tr.dataset.backend, state: tr.dataset.state,
    text: tr.textContent})),
  alerts: q('#alerts tr').map(tr => tr.textContent),
  charts: q('#charts canvas').length,
  first_render_ms: Number(document.body.dataset.firstRenderMs || 0),
  first_render_hosts: Number(document.body.dataset.firstRenderHosts || 0),
  heat_canvas_cells: Number((document.getElementById('heatcanvas') || {dataset: {}}).dataset.cells || 0),
};
"""


def errors(d):
    # Everything Chromium logged at SEVERE: script errors, failed loads, CSP refusals.
    return [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def main():
    profile = sys.argv[1]
    d = start(profile)
    seen_errors = []
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "load":
                d.get(cmd[1])
                t0 = time.time()
                while time.time() - t0 < 30:
                    if d.execute_script("return document.body.dataset.renderedAt || null"):
                        break
                    time.sleep(0.2)
                d.execute_script("window.__vmvpnTestMarker = 'same page';")
                seen_errors += errors(d)
                out({"ok": True, "after_s": round(time.time() - t0, 2)})
            elif cmd[0] == "look":
                v = d.execute_script(LOOK)
                seen_errors += errors(d)
                v["errors"] = seen_errors
                out(v)
            elif cmd[0] in ("wait-down", "wait-up"):
                host, limit = cmd[1], float(cmd[2])
                want = ("down", "gone") if cmd[0] == "wait-down" else ("up",)
                t0 = time.time()
                state = None
                while time.time() - t0 < limit:
                    v = d.execute_script(LOOK)
                    match = [h for h in v["hosts"] if h["name"] == host]
                    state = match[0]["state"] if match else "gone"
                    if state in want:
                        break
                    time.sleep(0.2)
                v = d.execute_script(LOOK)
                seen_errors += errors(d)
                out({"state": state, "after_s": round(time.time() - t0, 2),
                     "marker": v["marker"], "errors": seen_errors})
            elif cmd[0] == "click-cell":
                a, b = cmd[1], cmd[2]
                cell = d.find_element(By.CSS_SELECTOR,
                                      f'#heatmap rect.cell[data-from="{a}"][data-to="{b}"]')
                d.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", cell)
                t0 = time.time()
                n = 0
                while time.time() - t0 < 10:
                    n = d.execute_script("return document.querySelectorAll('#charts canvas').length")
                    if n >= 3:
                        break
                    time.sleep(0.2)
                title = d.execute_script("return document.getElementById('series-title').textContent")
                seen_errors += errors(d)
                out({"charts": n, "title": title, "errors": seen_errors})
            elif cmd[0] == "shot":
                d.execute_script("window.scrollTo(0, 0)")
                ok = d.save_screenshot(cmd[1])
                out({"ok": bool(ok)})
            elif cmd[0] == "quit":
                out({"ok": True})
                break
            else:
                out({"error": "unknown command " + cmd[0]})
    finally:
        d.quit()


if __name__ == "__main__":
    main()
