"""Registration (RSA), node credentials, health calls, control channel and PingStatus."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from botocore.exceptions import ClientError

from portless.protocol.message import MessageType, decode
from portless.protocol.payloads import AgentTaskAcknowledge
from tests.server.conftest import ServerThread
from tests.server.fakes import (
    JSON11,
    Node,
    expect_closed,
    instance_key,
    ping_status,
    token_from_xml,
)
from tests.waiting import wait_until


async def test_registration_and_online(server: ServerThread) -> None:
    ssm = server.ssm()
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, ssm)
        assert node.instance_id.startswith("mi-") and len(node.instance_id) == 20
        assert node.access_key.startswith("ASIA") and node.token
        assert 3000 < node.expiration - time.time() <= 3600

        status, out = await node.update_info()
        assert (status, out) == (200, {})
        status, out = await node.call("AmazonSSM.UpdateInstanceInformation", {
            "AgentName": "amazon-ssm-agent", "AgentStatus": "Active",
            "AgentVersion": "3.3.0.0", "ComputerName": "vm", "IPAddress": "192.0.2.2",
            "InstanceId": node.instance_id, "PlatformName": "Debian GNU/Linux",
            "PlatformType": "Linux", "PlatformVersion": "12", "SSMConnectionChannel": "",
            "AvailabilityZone": "", "AvailabilityZoneId": ""})
        assert status == 200
        status, out = await node.call("AmazonSSM.ListInstanceAssociations",
                                      {"InstanceId": node.instance_id, "MaxResults": 20})
        assert (status, out) == (200, {"Associations": []})
        started = time.monotonic()
        status, out = await node.call("EC2WindowsMessageDeliveryService.GetMessages", {
            "Destination": node.instance_id, "MessagesRequestId": "r-1",
            "VisibilityTimeoutInSeconds": 10}, service="ec2messages")
        assert status == 200 and out["Messages"] == [] and out["MessagesRequestId"] == "r-1"
        assert time.monotonic() - started >= 0.15

        assert await ping_status(server, node.instance_id) == "ConnectionLost"
        control = await node.open_control()

        async def online() -> bool:
            return await ping_status(server, node.instance_id) == "Online"

        await wait_until(online)
        info = (await asyncio.to_thread(ssm.describe_instance_information))[
            "InstanceInformationList"][0]
        assert info["ComputerName"] == "vm" and info["IPAddress"] == "192.0.2.2"
        assert info["PlatformType"] == "Linux" and info["ResourceType"] == "ManagedInstance"
        assert info["IamRole"] == "SSMRole"
        conn = await asyncio.to_thread(ssm.get_connection_status, Target=node.instance_id)
        assert conn["Status"] == "connected"
        online_filter = await asyncio.to_thread(
            ssm.describe_instance_information,
            InstanceInformationFilterList=[{"key": "PingStatus", "valueSet": ["Online"]}])
        assert [i["InstanceId"] for i in online_filter["InstanceInformationList"]] == \
            [node.instance_id]

        await control.close()

        async def lost() -> bool:
            return await ping_status(server, node.instance_id) == "ConnectionLost"

        await wait_until(lost)


async def test_node_credentials_are_limited(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        other = await Node.register(http, server.url, server.ssm())
        status, out = await node.call("AmazonSSM.StartSession", {"Target": other.instance_id})
        assert status == 400 and out["__type"] == "AccessDeniedException"
        assert "ssm:StartSession" in out["message"]
        status, out = await node.call("AmazonSSM.DescribeInstanceInformation", {})
        assert out["__type"] == "AccessDeniedException"
        # A node may report only for itself.
        status, out = await node.call("AmazonSSM.UpdateInstanceInformation", {
            "AgentName": "x", "AgentVersion": "3.3.0.0", "InstanceId": other.instance_id,
            "PlatformType": "Linux"})
        assert out["__type"] == "AccessDeniedException"
        status, text = await node.mgs_post(f"/v1/control-channel/{other.instance_id}",
                                           {"MessageSchemaVersion": "1.0", "RequestId": "x"})
        assert status == 400 and "<AccessDeniedException>" in text
        # A node's credentials signed for ssm do not work for another node's identity, and
        # temporary credentials need their session token.
        node.token = "forged"
        status, out = await node.call("AmazonSSM.UpdateInstanceInformation", {
            "InstanceId": node.instance_id})
        assert out["__type"] == "UnrecognizedClientException"


async def test_registration_errors(server: ServerThread) -> None:
    ssm = server.ssm()
    act = ssm.create_activation(IamRole="SSMRole", RegistrationLimit=1)
    from portless.aws.rsa_signature import public_key_b64

    body = {"ActivationCode": act["ActivationCode"], "ActivationId": act["ActivationId"],
            "Fingerprint": "fp", "PublicKey": public_key_b64(instance_key()),
            "PublicKeyType": "Rsa"}
    headers = {"Content-Type": JSON11, "X-Amz-Target": "AmazonSSM.RegisterManagedInstance"}
    async with aiohttp.ClientSession() as http:
        bad = dict(body, ActivationCode="X" * 20)
        async with http.post(server.url + "/", data=json.dumps(bad), headers=headers) as r:
            assert r.status == 400
            assert (await r.json(content_type=None))["__type"] == "InvalidActivation"
        bad = dict(body, ActivationId="00000000-0000-4000-8000-000000000000")
        async with http.post(server.url + "/", data=json.dumps(bad), headers=headers) as r:
            assert (await r.json(content_type=None))["__type"] == "InvalidActivationId"
        async with http.post(server.url + "/", data=json.dumps(body), headers=headers) as r:
            assert r.status == 200
            instance_id = (await r.json(content_type=None))["InstanceId"]
        async with http.post(server.url + "/", data=json.dumps(body), headers=headers) as r:
            assert (await r.json(content_type=None))["__type"] == "InvalidActivation"
        node = Node(http, server.url, instance_id, instance_key(), "another-fingerprint")
        status, out = await node.rsa_call("RequestManagedInstanceRoleToken",
                                          {"Fingerprint": "another-fingerprint"})
        assert status == 400 and out["__type"] == "MachineFingerprintDoesNotMatch"
        node.fingerprint = "fp"
        await node.refresh_credentials()
        listed = ssm.describe_activations()["ActivationList"][0]
        assert listed["RegistrationsCount"] == 1


async def test_control_channel_tokens_and_task_ack(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, server.ssm())
        status, text = await node.mgs_post(f"/v1/control-channel/{node.instance_id}",
                                           {"MessageSchemaVersion": "1.0", "RequestId": "x"})
        assert status == 201 and text.startswith("<CreateControlChannelResponse>")
        assert "<MessageSchemaVersion>1.0</MessageSchemaVersion>" in text
        token = token_from_xml(text)
        path = f"/v1/control-channel/{node.instance_id}?role=subscribe&stream=input"
        from portless.protocol.payloads import OpenControlChannel

        ws = await node.ws_connect(path)
        await ws.send_str(OpenControlChannel(token, "3.3.0.0").to_json())
        # The token is single use.
        ws2 = await node.ws_connect(path)
        await ws2.send_str(OpenControlChannel(token, "3.3.0.0").to_json())
        code, reason = await expect_closed(ws2)
        assert code == 1008 and "token" in reason
        # agent_task_complete for an unknown session is acknowledged all the same.
        sent = await node.task_complete(ws, "admin-00000000000000000")
        msg = await asyncio.wait_for(ws.receive(), 5)
        ack = decode(msg.data)
        assert ack.message_type == MessageType.AGENT_TASK_ACKNOWLEDGE
        assert AgentTaskAcknowledge.from_json(ack.payload).message_id == sent.id_str
        # A second control channel replaces the first.
        ws3 = await node.open_control()
        code, _ = await expect_closed(ws)
        assert code == 1000
        assert not ws3.closed
        await ws3.close()


async def test_tags_on_nodes(server: ServerThread) -> None:
    ssm = server.ssm()
    async with aiohttp.ClientSession() as http:
        node = await Node.register(http, server.url, ssm)
    ssm.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=node.instance_id,
                             Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "a"}])
    tags = ssm.list_tags_for_resource(ResourceType="ManagedInstance",
                                      ResourceId=node.instance_id)["TagList"]
    assert tags == [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "a"}]
    found = ssm.describe_instance_information(Filters=[{"Key": "tag:env", "Values": ["prod"]}])
    assert [i["InstanceId"] for i in found["InstanceInformationList"]] == [node.instance_id]
    ssm.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=node.instance_id,
                                  TagKeys=["env"])
    tags = ssm.list_tags_for_resource(ResourceType="ManagedInstance",
                                      ResourceId=node.instance_id)["TagList"]
    assert tags == [{"Key": "team", "Value": "a"}]
    with pytest.raises(ClientError):
        ssm.add_tags_to_resource(ResourceType="ManagedInstance", ResourceId=node.instance_id,
                                 Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(60)])


async def test_describe_pagination(server: ServerThread) -> None:
    ssm = server.ssm()
    async with aiohttp.ClientSession() as http:
        ids = set()
        for _ in range(7):
            ids.add((await Node.register(http, server.url, ssm)).instance_id)
    first = ssm.describe_instance_information(MaxResults=5)
    assert len(first["InstanceInformationList"]) == 5 and first["NextToken"]
    second = ssm.describe_instance_information(MaxResults=5, NextToken=first["NextToken"])
    assert "NextToken" not in second
    seen = {i["InstanceId"] for i in first["InstanceInformationList"]} | {
        i["InstanceId"] for i in second["InstanceInformationList"]}
    assert seen == ids
    paginator = ssm.get_paginator("describe_instance_information")
    assert sum(len(p["InstanceInformationList"])
               for p in paginator.paginate(PaginationConfig={"PageSize": 5})) == 7
