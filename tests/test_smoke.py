def test_login_page_renders(anon_client):
    response = anon_client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content


def test_dashboard_requires_login(anon_client):
    response = anon_client.get("/dashboard/logs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_nul_in_a_parameter_is_a_400_naming_it(admin_client):
    for url in ("/admin/monitoring/messagerequest/?model=%00", "/admin/monitoring/messagerequest/?q=%00",
                "/dashboard/logs/?session_id=a%00b"):
        response = admin_client.get(url)
        assert response.status_code == 400, url
        assert "含有 NUL 字符" in response.content.decode()
    english = admin_client.get("/dashboard/logs/?session_id=a%00b", HTTP_ACCEPT_LANGUAGE="en")
    assert english.content.decode() == "The parameter 'session_id' holds a NUL character."


def test_nul_in_a_posted_form_is_a_400(client):
    response = client.post(
        "/accounts/login/", "username=a%00&password=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert response.content.decode() == "参数 'username' 中含有 NUL 字符。"


def test_nul_in_an_export_parameter_is_a_json_400(admin_client):
    response = admin_client.get("/exports/usage-logs.csv?model=a%00b")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["fields"] == {"model": [{"message": response.json()["error"], "code": "nul"}]}


def test_nul_in_an_ingest_parameter_is_answered_in_english(client, settings):
    settings.LANGUAGE_CODE = "zh-hans"
    response = client.post("/api/ingest/requests?x=a%00", "[]", content_type="application/json",
                           HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 400
    assert response.json()["error"] == "The parameter 'x' holds a NUL character."
