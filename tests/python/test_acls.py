"""ACLs with confluent-kafka's AdminClient (create_acls, describe_acls,
delete_acls) against a broker running the ACL authorizer, and what they
let a SASL/PLAIN user's producer, group consumer and kcat do."""

import shutil
import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
    ResourcePatternType, ResourceType,
)

from conftest import Broker, serving

LISTENERS = "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0"


@pytest.fixture
def acl_broker(tmp_path):
    users = tmp_path / "users.toml"
    users.write_text('[users]\nalice = "alice-secret"\nadmin = "admin-secret"\n')
    (tmp_path / "broker").mkdir()
    # The PLAINTEXT listener's anonymous principal is a super user: the
    # admin client below uses it.
    b = Broker(tmp_path / "broker", extra_args=[
        "--listeners", LISTENERS,
        "--sasl-plain-users-file", str(users),
        "--authorizer", "acl",
        "--super-users", "User:ANONYMOUS;User:admin",
    ]).start()
    yield from serving(b)


def alice(broker, **extra):
    conf = {"bootstrap.servers": broker.listeners["SASL_PLAINTEXT"],
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "alice", "sasl.password": "alice-secret"}
    conf.update(extra)
    return conf


def produce_one(conf, topic):
    """The delivery error of one record, None on success."""
    p = Producer({**conf, "message.timeout.ms": 15000})
    errors = []
    p.produce(topic, key=b"k", value=b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert len(errors) == 1
    return errors[0]


def wait_all(futures):
    for f in futures.values() if isinstance(futures, dict) else futures:
        f.result(timeout=30)


def test_acls_made_with_the_admin_client_govern_a_sasl_user(acl_broker):
    admin = AdminClient({"bootstrap.servers": acl_broker.bootstrap})
    topic = f"acl-{uuid.uuid4().hex[:8]}"
    group = f"acl-group-{uuid.uuid4().hex[:6]}"
    from confluent_kafka.admin import NewTopic
    wait_all(admin.create_topics([NewTopic(topic, 1, 1)]))

    err = produce_one(alice(acl_broker), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err

    def binding(rt, name, op, pattern=ResourcePatternType.LITERAL,
                permission=AclPermissionType.ALLOW, principal="User:alice"):
        return AclBinding(rt, name, pattern, principal, "*", op, permission)

    wanted = [
        binding(ResourceType.TOPIC, topic, AclOperation.WRITE),
        binding(ResourceType.TOPIC, topic, AclOperation.READ),
        binding(ResourceType.GROUP, "acl-group-", AclOperation.READ,
                pattern=ResourcePatternType.PREFIXED),
    ]
    result = admin.create_acls(wanted)
    wait_all(result)

    # describe_acls returns exactly what was created.
    any_filter = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
        AclOperation.ANY, AclPermissionType.ANY)
    described = admin.describe_acls(any_filter).result(timeout=30)
    assert sorted(map(str, described)) == sorted(map(str, wanted))

    assert produce_one(alice(acl_broker), topic) is None
    c = Consumer(alice(acl_broker, **{"group.id": group, "auto.offset.reset": "earliest",
                                      "enable.auto.commit": False}))
    try:
        c.subscribe([topic])
        m = None
        for _ in range(30):
            m = c.poll(1)
            if m is not None:
                break
        assert m is not None and m.error() is None, m and m.error()
        assert m.value() == b"v"
        c.commit(asynchronous=False)
    finally:
        c.close()

    # A group no ACL lets her read: joining it is refused.
    c = Consumer(alice(acl_broker, **{"group.id": f"other-{uuid.uuid4().hex[:6]}",
                                      "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([topic])
        refused = None
        for _ in range(30):
            m = c.poll(1)
            if m is not None and m.error() is not None:
                refused = m.error()
                break
        assert refused is not None and \
            refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, refused
    finally:
        c.close()

    # kcat, logged in as alice, lists only what she may describe.
    kcat = shutil.which("kcat")
    assert kcat, "kcat is required: bash tests/run.sh installs it"
    out = subprocess.run(
        [kcat, "-b", acl_broker.listeners["SASL_PLAINTEXT"], "-L", "-J",
         "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
         "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"],
        capture_output=True, text=True, timeout=60, check=True).stdout
    import json
    topics = [t["topic"] for t in json.loads(out)["topics"]]
    assert topics == [topic], topics

    # Deleting by filter removes the matching ACLs and reports them.
    write_filter = AclBindingFilter(
        ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", None,
        AclOperation.WRITE, AclPermissionType.ANY)
    deleted = admin.delete_acls([write_filter])
    (only,) = deleted.values()
    assert [str(b) for b in only.result(timeout=30)] == [str(wanted[0])]
    err = produce_one(alice(acl_broker), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err

    # An ACL the broker cannot take is refused with INVALID_REQUEST.
    bad = admin.create_acls([AclBinding(
        ResourceType.BROKER, "not-kafka-cluster", ResourcePatternType.LITERAL,
        "User:alice", "*", AclOperation.ALTER, AclPermissionType.ALLOW)])
    with pytest.raises(Exception) as refused:
        wait_all(bad)
    assert "kafka-cluster" in str(refused.value)
