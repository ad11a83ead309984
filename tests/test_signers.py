"""The shared signers against the published and captured provider vectors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from providers import aliyun_sign, wsse
from providers.aliyun import AliyunProvider
from providers.base import Message, ProviderSettings, Secret
from providers.huawei import HuaweiProvider

# Copied from ../shared/provider-vectors.json, which lives outside the repository: a fresh
# clone must still check every RPC v1 and WSSE vector.
RPC_V1: list[dict[str, Any]] = [
    {
        "name": "aliyun-doc-sendsms-GET",
        "method": "GET",
        "secret": "testSecret",
        "params": {
            "AccessKeyId": "testId",
            "Action": "SendSms",
            "Format": "XML",
            "OutId": "123",
            "PhoneNumbers": "15300000001",
            "RegionId": "cn-hangzhou",
            "SignName": "阿里云短信测试专用",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
            "SignatureVersion": "1.0",
            "TemplateCode": "SMS_71390007",
            "TemplateParam": "{\"customer\":\"test\"}",
            "Timestamp": "2017-07-12T02:42:19Z",
            "Version": "2017-05-25",
        },
        "string_to_sign": ("GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26O"
                           "utId%3D123%26PhoneNumbers%3D15300000001%26RegionId%3Dcn-hangzhou%2"
                           "6SignName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259"
                           "F%25AD%25E4%25BF%25A1%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593"
                           "%25E7%2594%25A8%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D4"
                           "5e25e9b-0a6f-4070-8c85-2956eda1b466%26SignatureVersion%3D1.0%26Tem"
                           "plateCode%3DSMS_71390007%26TemplateParam%3D%257B%2522customer%2522"
                           "%253A%2522test%2522%257D%26Timestamp%3D2017-07-12T02%253A42%253A19"
                           "Z%26Version%3D2017-05-25"),
        "signature": "zJDF+Lrzhj/ThnlvIToysFRq6t4=",
    },
    {
        "name": "aliyun-doc-ecs-DescribeRegions-GET",
        "method": "GET",
        "secret": "testsecret",
        "params": {
            "AccessKeyId": "testid",
            "Action": "DescribeRegions",
            "Format": "XML",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
            "SignatureVersion": "1.0",
            "Timestamp": "2016-02-23T12:46:24Z",
            "Version": "2014-05-26",
        },
        "string_to_sign": ("GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3"
                           "DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d"
                           "3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D20"
                           "16-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"),
        "signature": "OLeaidS1JvxuMvnyHOwuJ+uX5qY=",
    },
    {
        "name": "aliyun-python-sdk-core 2.16.1 CommonRequest SendSms POST",
        "method": "POST",
        "secret": "testSecret",
        "params": {
            "RegionId": "cn-hangzhou",
            "PhoneNumbers": "15300000001",
            "SignName": "阿里云短信测试",
            "TemplateCode": "SMS_154950909",
            "TemplateParam": "{\"code\":\"1234\"}",
            "OutId": "msg-0001 a*b~c",
            "Version": "2017-05-25",
            "Action": "SendSms",
            "Format": "JSON",
            "Timestamp": "2026-11-24T08:00:00Z",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureType": "",
            "SignatureVersion": "1.0",
            "SignatureNonce": "d3b07384d113edec49eaa6238ad5ff00",
            "AccessKeyId": "testId",
        },
        "string_to_sign": ("POST&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DJSON%2"
                           "6OutId%3Dmsg-0001%2520a%252Ab~c%26PhoneNumbers%3D15300000001%26Reg"
                           "ionId%3Dcn-hangzhou%26SignName%3D%25E9%2598%25BF%25E9%2587%258C%25"
                           "E4%25BA%2591%25E7%259F%25AD%25E4%25BF%25A1%25E6%25B5%258B%25E8%25A"
                           "F%2595%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Dd3b07384d1"
                           "13edec49eaa6238ad5ff00%26SignatureType%3D%26SignatureVersion%3D1.0"
                           "%26TemplateCode%3DSMS_154950909%26TemplateParam%3D%257B%2522code%2"
                           "522%253A%25221234%2522%257D%26Timestamp%3D2026-11-24T08%253A00%253"
                           "A00Z%26Version%3D2017-05-25"),
        "signature": "/XF3QGHvYWv+ZNSlEgsyLSMrYzU=",
        "wire_request_target": ("/?RegionId=cn-hangzhou&PhoneNumbers=15300000001&SignName=%E9%"
                                "98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95&T"
                                "emplateCode=SMS_154950909&TemplateParam=%7B%22code%22%3A%2212"
                                "34%22%7D&OutId=msg-0001%20a%2Ab~c&Version=2017-05-25&Action=S"
                                "endSms&Format=JSON&Timestamp=2026-11-24T08%3A00%3A00Z&Signatu"
                                "reMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&Signat"
                                "ureNonce=d3b07384d113edec49eaa6238ad5ff00&AccessKeyId=testId&"
                                "Signature=%2FXF3QGHvYWv%2BZNSlEgsyLSMrYzU%3D"),
    },
    {
        "name": "alibabacloud_dysmsapi20170525 4.6.0 + tea-openapi 0.4.6",
        "method": "POST",
        "secret": "testSecret",
        "params": {
            "Action": "SendSms",
            "Format": "json",
            "Version": "2017-05-25",
            "Timestamp": "2026-11-24T08:00:00Z",
            "SignatureNonce": "d3b07384d113edec49eaa6238ad5ff00",
            "OutId": "msg-0001 a*b~c",
            "PhoneNumbers": "15300000001",
            "SignName": "阿里云短信测试",
            "TemplateCode": "SMS_154950909",
            "TemplateParam": "{\"code\":\"1234\"}",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0",
            "AccessKeyId": "testId",
        },
        "string_to_sign": ("POST&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3Djson%2"
                           "6OutId%3Dmsg-0001%2520a%252Ab~c%26PhoneNumbers%3D15300000001%26Sig"
                           "nName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25"
                           "AD%25E4%25BF%25A1%25E6%25B5%258B%25E8%25AF%2595%26SignatureMethod%"
                           "3DHMAC-SHA1%26SignatureNonce%3Dd3b07384d113edec49eaa6238ad5ff00%26"
                           "SignatureVersion%3D1.0%26TemplateCode%3DSMS_154950909%26TemplatePa"
                           "ram%3D%257B%2522code%2522%253A%25221234%2522%257D%26Timestamp%3D20"
                           "26-11-24T08%253A00%253A00Z%26Version%3D2017-05-25"),
        "signature": "gFcoCeuGFpxK9gQv5/L5FZ41Mbo=",
        "wire_request_target": ("/?Action=SendSms&Format=json&Version=2017-05-25&Timestamp=202"
                                "6-11-24T08%3A00%3A00Z&SignatureNonce=d3b07384d113edec49eaa623"
                                "8ad5ff00&OutId=msg-0001+a%2Ab~c&PhoneNumbers=15300000001&Sign"
                                "Name=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E"
                                "8%AF%95&TemplateCode=SMS_154950909&TemplateParam=%7B%22code%2"
                                "2%3A%221234%22%7D&SignatureMethod=HMAC-SHA1&SignatureVersion="
                                "1.0&AccessKeyId=testId&Signature=gFcoCeuGFpxK9gQv5%2FL5FZ41Mb"
                                "o%3D"),
    },
]
WSSE: list[dict[str, str]] = [
    {
        "app_key": "c8RWg3ggEcyd4D3p94bf3Y7x1Ile",
        "app_secret": "q4Ii87BhST9vcs8wvrzN80SfD7Al",
        "nonce": "ac1c911c4792492687f8f6b2264a491e",
        "created": "2018-05-26T00:35:30Z",
        "password_digest": ("NTA0ZWE4Y2Q0ZGMyYWEwZDk0MWZmNjE4NGQxYjc1Y2YzNWYwNzgwZTdjMGU4ZDgzN"
                            "mZmMGE3MWJlODA0MjBmZg=="),
        "x_wsse_header": ("UsernameToken Username=\"c8RWg3ggEcyd4D3p94bf3Y7x1Ile\",PasswordDig"
                          "est=\"NTA0ZWE4Y2Q0ZGMyYWEwZDk0MWZmNjE4NGQxYjc1Y2YzNWYwNzgwZTdjMGU4Z"
                          "DgzNmZmMGE3MWJlODA0MjBmZg==\",Nonce=\"ac1c911c4792492687f8f6b2264a4"
                          "91e\",Created=\"2018-05-26T00:35:30Z\""),
    },
    {
        "app_key": "testAppKey",
        "app_secret": "testAppSecret",
        "nonce": "66c9d4a1f2e84b1c9b0a7f3e5d2c1b0a",
        "created": "2026-11-24T08:00:00Z",
        "password_digest": ("MDA1MWQ0N2VmZGMxZGU3MTMwZGRmMmYzMGVmMTc5YWUyN2VjM2JiMTAyOWFjMWEwY"
                            "TVhNmJjNmQ1MDg4YjkzNg=="),
        "x_wsse_header": ("UsernameToken Username=\"testAppKey\",PasswordDigest=\"MDA1MWQ0N2Vm"
                          "ZGMxZGU3MTMwZGRmMmYzMGVmMTc5YWUyN2VjM2JiMTAyOWFjMWEwYTVhNmJjNmQ1MDg"
                          "4YjkzNg==\",Nonce=\"66c9d4a1f2e84b1c9b0a7f3e5d2c1b0a\",Created=\"20"
                          "26-11-24T08:00:00Z\""),
    },
]


ROOT = Path(__file__).resolve().parent.parent
SHARED = [Path(os.environ.get("PROVIDER_VECTORS", ROOT.parent / "shared/provider-vectors.json")),
          ROOT.parent.parent / "shared/provider-vectors.json"]  # from a worktree too


def test_the_copies_are_every_published_vector_unchanged() -> None:
    """The copies above against the shared file, where a checkout has it: none missing or edited."""
    found = next((path for path in SHARED if path.is_file()), None)
    if found is None:
        pytest.skip("no shared provider-vectors.json next to this checkout (PROVIDER_VECTORS)")
    shared = json.loads(found.read_text(encoding="utf-8"))
    rpc = {(v["expected"]["string_to_sign"], v["expected"]["signature"])
           for v in shared["aliyun"] if v["algorithm"].startswith("RPC v1")}
    assert {(v["string_to_sign"], v["signature"]) for v in RPC_V1} == rpc
    published = {(v["inputs"]["app_key"], v["expected"]["x_wsse_header"])
                 for v in shared["huawei"] if v["algorithm"].startswith("WSSE")}
    assert {(v["app_key"], v["x_wsse_header"]) for v in WSSE} == published


@pytest.mark.parametrize("vector", RPC_V1, ids=lambda v: v["name"])
def test_aliyun_rpc_v1_vectors(vector: dict[str, Any]) -> None:
    method, params = vector["method"], vector["params"]
    assert aliyun_sign.string_to_sign(method, params) == vector["string_to_sign"]
    assert aliyun_sign.signature(method, params, vector["secret"]) == vector["signature"]
    sent = dict(parse_qsl(aliyun_sign.signed_query(method, params, vector["secret"]),
                          keep_blank_values=True))
    assert sent == {**params, "Signature": vector["signature"]}


@pytest.mark.parametrize("vector", [v for v in RPC_V1 if "wire_request_target" in v],
                         ids=lambda v: v["name"])
def test_aliyun_wire_query_decodes_to_the_signed_params(vector: dict[str, Any]) -> None:
    # Both SDKs' wire forms (space as %20 or as +) must decode to exactly what was signed.
    decoded = dict(parse_qsl(urlsplit(vector["wire_request_target"]).query,
                             keep_blank_values=True))
    assert decoded.pop("Signature") == vector["signature"]
    assert decoded == vector["params"]
    assert dict(parse_qsl(aliyun_sign.wire_query(decoded), keep_blank_values=True)) == decoded


@pytest.mark.parametrize("vector", WSSE, ids=lambda v: v["app_key"])
def test_huawei_wsse_vectors(vector: dict[str, str]) -> None:
    digest = wsse.password_digest(vector["nonce"], vector["created"], vector["app_secret"])
    assert digest == vector["password_digest"]
    header = wsse.x_wsse(vector["app_key"], vector["app_secret"], vector["nonce"],
                         vector["created"])
    assert header == vector["x_wsse_header"]
    assert wsse.AUTHORIZATION == 'WSSE realm="SDP",profile="UsernameToken",type="Appkey"'


@pytest.mark.parametrize("vector", WSSE, ids=lambda v: v["app_key"])
def test_parse_x_wsse_round_trip(vector: dict[str, str]) -> None:
    assert wsse.parse_x_wsse(vector["x_wsse_header"]) == {
        "Username": vector["app_key"], "PasswordDigest": vector["password_digest"],
        "Nonce": vector["nonce"], "Created": vector["created"]}
    spaced = vector["x_wsse_header"].replace('",', '", ')  # be lenient about ", "
    assert wsse.parse_x_wsse(spaced) == wsse.parse_x_wsse(vector["x_wsse_header"])
    assert wsse.parse_x_wsse('Basic realm="x"') is None


def test_fresh_x_wsse_parses_and_verifies() -> None:
    fields = wsse.parse_x_wsse(wsse.x_wsse("key", "secret"))
    assert fields is not None
    assert fields["Username"] == "key"
    assert len(fields["Nonce"]) == 32
    assert fields["PasswordDigest"] == wsse.password_digest(fields["Nonce"], fields["Created"],
                                                            "secret")


MESSAGE = Message(id="msg-0001 a*b~c", to=("+8613800138000", "+8613900139000"),
                  template="verify_code", params={"code": "1234", "product": "短信"})


def test_aliyun_params_wire_shape() -> None:
    settings = ProviderSettings(
        name="aliyun", type="aliyun", endpoint="http://127.0.0.1:1",
        credentials={"access_key_id": Secret("id"), "access_key_secret": Secret("secret")},
        templates={"verify_code": "SMS_154950909"}, options={"sign_name": "阿里云短信测试"})
    provider = AliyunProvider(settings, None)  # type: ignore[arg-type]  # params() sends nothing
    params = provider.params(MESSAGE, "nonce-1", "2026-11-24T08:00:00Z")
    assert params["OutId"] == MESSAGE.id
    assert params["PhoneNumbers"] == "8613800138000,8613900139000"
    assert json.loads(params["TemplateParam"]) == {"code": "1234", "product": "短信"}
    assert params["TemplateCode"] == "SMS_154950909"
    assert params["SignName"] == "阿里云短信测试"
    assert params["AccessKeyId"] == "id"
    assert (params["Action"], params["Version"]) == ("SendSms", "2017-05-25")
    assert (params["SignatureMethod"], params["SignatureVersion"]) == ("HMAC-SHA1", "1.0")
    assert (params["SignatureNonce"], params["Timestamp"]) == ("nonce-1", "2026-11-24T08:00:00Z")
    assert "Signature" not in params


def test_huawei_form_wire_shape() -> None:
    settings = ProviderSettings(
        name="huawei", type="huawei", endpoint="http://127.0.0.1:1",
        credentials={"app_key": Secret("key"), "app_secret": Secret("secret")},
        templates={"verify_code": "8ff55eac1d0b478ab3c06c3c6a492300"},
        options={"sender": "csms12345678"})
    form = HuaweiProvider(settings, None).form(MESSAGE)  # type: ignore[arg-type]
    assert form == {"from": "csms12345678", "to": "+8613800138000,+8613900139000",
                    "templateId": "8ff55eac1d0b478ab3c06c3c6a492300",
                    "templateParas": '["1234", "短信"]', "extend": MESSAGE.id}
