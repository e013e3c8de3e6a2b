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
    options = re.findall(r'<option value="([^"]+)"', page)
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
