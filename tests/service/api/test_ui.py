"""The page at `/`: rendered by the server, every asset served from here, Flower linked from the header."""
import dataclasses
import re

from service.api.ui import UI_MAX_IMAGE_BYTES
from service.app import create_app


def test_the_page_renders_with_the_models_the_limits_and_the_flower_link(client, settings):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'id="flower-link" class="navlink" href="http://127.0.0.1:5555"' in page
    models = re.search(r'<select id="model".*?</select>', page, re.S).group(0)
    options = re.findall(r'<option value="([^"]+)"', models)
    assert options[0] == settings.default_model and set(options) == set(settings.registry)
    assert f'"maxImageBytes": {UI_MAX_IMAGE_BYTES}' in page


def test_the_page_loads_nothing_from_another_origin(client):
    page = client.get("/").get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"#]+)"', page)
    local = [url for url in urls if url.startswith("/")]
    assert sorted(set(urls) - set(local)) == ["http://127.0.0.1:5555"]  # Flower, a link and not a resource
    assert {"/static/app.css", "/static/app.js", "/static/favicon.svg"} <= set(local)
    for url in set(local) - {"/"}:
        asset = client.get(url)
        assert asset.status_code == 200, url
        text = asset.get_data(as_text=True).replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert not re.search(r"https?://", text), url
    assert client.get("/static/app.js").mimetype == "text/javascript"


def test_flower_url_and_the_image_limit_follow_the_settings(settings):
    custom = dataclasses.replace(settings, flower_url="https://ops.example.com/flower/", max_image_bytes=4096)
    page = create_app(custom).test_client().get("/").get_data(as_text=True)
    assert 'href="https://ops.example.com/flower/"' in page
    assert '"maxImageBytes": 4096' in page
    moved = dataclasses.replace(settings, flower_host="0.0.0.0", flower_port=5599)
    assert moved.flower_link == "http://0.0.0.0:5599"


def test_html_gets_a_content_security_policy_and_no_framing_and_every_response_nosniff(client):
    page = client.get("/")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"  # no inline script or style
    assert page.headers["X-Frame-Options"] == "DENY"
    for response in (page, client.get("/v1/jobs"), client.get("/static/app.js"), client.get("/nope"),
                     client.application.test_client().get("/v1/jobs")):  # a 401 too
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.request.path
        assert response.headers["Referrer-Policy"] == "no-referrer"
    json_answer = client.get("/v1/jobs")
    assert json_answer.mimetype == "application/json" and "X-Frame-Options" not in json_answer.headers


def test_the_page_has_no_inline_script_or_style_that_its_policy_would_block(client):
    page = client.get("/").get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.S)
    assert all('src="' in attrs or 'type="application/json"' in attrs for attrs, _ in scripts)  # data is no script
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page)
