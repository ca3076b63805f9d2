def test_login_page_renders(anon_client):
    response = anon_client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content


def test_dashboard_requires_login(anon_client):
    response = anon_client.get("/dashboard/logs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
