"""confluent-kafka (the PyPI wheel's librdkafka and OpenSSL) against
Strata's secured listeners: SSL, SASL_PLAINTEXT and SASL_SSL with PLAIN,
client certificates, and the refusals clients expect."""

import uuid

import pytest
import trustme
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import Broker, serving

LISTENERS = ",".join(
    f"{p}://127.0.0.1:0" for p in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
)


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("strata-python-client")
    files = {name: tmp_path / f"{name}.pem" for name in
             ("ca", "server", "server-key", "client", "client-key", "other-ca")}
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["server"])
    server.private_key_pem.write_to_path(files["server-key"])
    client.cert_chain_pems[0].write_to_path(files["client"])
    client.private_key_pem.write_to_path(files["client-key"])
    trustme.CA().cert_pem.write_to_path(files["other-ca"])
    return {k: str(v) for k, v in files.items()}


def start_secure(tmp_path, pki, client_auth="none", mechanisms="PLAIN"):
    users = tmp_path / "users.toml"
    users.write_text('[users]\nalice = "alice-secret"\n')
    b = Broker(tmp_path / "broker", extra_args=[
        "--listeners", LISTENERS,
        "--ssl-certificate-file", pki["server"],
        "--ssl-key-file", pki["server-key"],
        "--ssl-client-ca-file", pki["ca"],
        "--ssl-client-auth", client_auth,
        "--sasl-plain-users-file", str(users),
        "--sasl-enabled-mechanisms", mechanisms,
    ])
    (tmp_path / "broker").mkdir()
    return b.start()


@pytest.fixture
def secure(tmp_path, pki):
    b = start_secure(tmp_path, pki)
    yield from serving(b)


def client_conf(broker, protocol, pki, password="alice-secret", **extra):
    conf = {"bootstrap.servers": broker.listeners[protocol], "security.protocol": protocol}
    if protocol.endswith("SSL"):
        conf["ssl.ca.location"] = pki["ca"]
    if protocol.startswith("SASL"):
        conf.update({"sasl.mechanism": "PLAIN", "sasl.username": "alice",
                     "sasl.password": password})
    conf.update(extra)
    return conf


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_produce_and_consume_in_a_group_over_each_listener(secure, pki, protocol):
    topic = f"secure-{protocol.lower()}-{uuid.uuid4().hex[:8]}"
    conf = client_conf(secure, protocol, pki)
    p = Producer({**conf, "linger.ms": 5})
    delivered = []
    for i in range(200):
        p.produce(topic, key=f"k{i}", value=f"value {i} ".encode() * 100,
                  on_delivery=lambda err, msg: delivered.append(err))
    assert p.flush(60) == 0
    assert delivered == [None] * 200
    md = p.list_topics(timeout=10)
    port = int(secure.listeners[protocol].rsplit(":", 1)[1])
    assert [b.port for b in md.brokers.values()] == [port]
    # A consumer group: FindCoordinator answers with this listener's address.
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    try:
        while len(got) < 200:
            m = c.poll(30)
            assert m is not None, f"only {len(got)} of 200 records"
            assert m.error() is None, m.error()
            got.append((m.key().decode(), m.value()))
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)
        assert committed[0].offset == 200
    finally:
        c.close()
    assert got == [(f"k{i}", f"value {i} ".encode() * 100) for i in range(200)]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_wrong_password_is_an_authentication_error(secure, pki, protocol):
    p = Producer(client_conf(secure, protocol, pki, password="wrong"))
    with pytest.raises(KafkaException):
        p.list_topics(timeout=5)
    assert "SASL authentication failed" in secure.logs()
    # Others are still served.
    ok = Producer(client_conf(secure, protocol, pki))
    assert ok.list_topics(timeout=10).brokers


def test_a_client_that_does_not_trust_the_broker_gives_up(secure, pki):
    conf = client_conf(secure, "SSL", pki)
    conf["ssl.ca.location"] = pki["other-ca"]
    with pytest.raises(KafkaException):
        Producer(conf).list_topics(timeout=5)


def test_scram_credentials_set_by_the_admin_client_log_in(tmp_path, pki):
    from confluent_kafka.admin import (
        AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )
    b = start_secure(tmp_path, pki, mechanisms="PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        fs = admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(
                "erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"erin-secret"),
            UserScramCredentialUpsertion(
                "erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"erin-secret"),
        ])
        for f in fs.values():
            f.result(timeout=30)
        described = admin.describe_user_scram_credentials(["erin"])["erin"].result(timeout=30)
        infos = sorted((i.mechanism, i.iterations) for i in described.scram_credential_infos)
        assert infos == sorted([(ScramMechanism.SCRAM_SHA_256, 4096),
                                (ScramMechanism.SCRAM_SHA_512, 8192)])
        # Too few iterations: refused for that user.
        bad = admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion(
                "frank", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")])
        with pytest.raises(KafkaException):
            bad["frank"].result(timeout=30)
        for protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                conf = client_conf(b, protocol, pki, **{
                    "sasl.mechanism": mechanism, "sasl.username": "erin",
                    "sasl.password": "erin-secret"})
                assert Producer(conf).list_topics(timeout=10).brokers
                conf["sasl.password"] = "wrong"
                with pytest.raises(KafkaException):
                    Producer(conf).list_topics(timeout=5)
        fs = admin.alter_user_scram_credentials([
            UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_512)])
        for f in fs.values():
            f.result(timeout=30)
        conf = client_conf(b, "SASL_SSL", pki, **{
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "erin",
            "sasl.password": "erin-secret"})
        with pytest.raises(KafkaException):
            Producer(conf).list_topics(timeout=5)
        b.stop()
    finally:
        b.kill()


def test_required_client_certificates(tmp_path, pki):
    b = start_secure(tmp_path, pki, client_auth="required")
    try:
        with pytest.raises(KafkaException):
            Producer(client_conf(b, "SSL", pki)).list_topics(timeout=5)
        conf = client_conf(b, "SSL", pki, **{
            "ssl.certificate.location": pki["client"],
            "ssl.key.location": pki["client-key"],
        })
        assert Producer(conf).list_topics(timeout=10).brokers
        assert "TLS handshake failed" in b.logs()
        b.stop()
    finally:
        b.kill()
