from tests.test_web_ui import *  # noqa

def test_shots(page, browser, live_server):
    page.screenshot(path="/tmp/webui-shots/empty.png")
    page.set_input_files("#file-input", [upload(f"r{i}.png", picture(i)) for i in range(3)] + [upload("x.txt", b"x", "text/plain")])
    page.select_option("#preset", "receipt")
    page.screenshot(path="/tmp/webui-shots/staged.png")
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    p = ctx.new_page(); p.goto(live_server); p.wait_for_selector("body[data-ready='true']")
    p.screenshot(path="/tmp/webui-shots/mobile.png", full_page=True)
