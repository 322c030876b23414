#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# lot export in the customer formats, for a lot of 4 enrolled devices and one failed row:
# - csv and json: the inventory's fields, row by row equal to the certificates in storage;
# - aws: the bulk-registration JSON lines, the provisioning template and the
#   RegisterCACertificate input, checked against the field lists of the AWS IoT API
#   documentation (StartThingRegistrationTask, provisioning templates, RegisterCACertificate);
# - azure-dps: the enrollment group and the individual enrollments, checked against the
#   Device Provisioning Service REST API's EnrollmentGroup and IndividualEnrollment bodies;
# - edge: the CA trust set, byte for byte what `chain export` writes;
# - the failed row (no certificate) is in none of them; --state picks rows by state;
# - a revoked device (revoke, the CA index): the inventory names its reason and time, the
#   cloud formats leave it out with one warning naming it; a config whose CA directory has
#   no index says the revocations were not checked;
# - bad input: an unknown lot exits 5 with one line and writes nothing, a directory export
#   onto an existing directory exits 6 and leaves it as it was, an unknown format exits 2;
#   a serial that is no AWS thing name and two devices with one CN (one DPS registration id)
#   exit 5 with one line and write nothing.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../batch/batch_lib.sh"
. "$(dirname "$0")/export_lib.sh"
it_setup
need python3 sqlite3
export_lot 4
facts_table >facts.txt
assert_eq "$(wc -l <facts.txt)" 4 "devices enrolled"

# ---- the lot command itself: each subcommand is there, anything else is one line, exit 2
prov 0 lot --help
assert_grep "$PROV_OUT" '^Usage: provisioner lot export '
assert_grep "$PROV_OUT" 'provisioner lot signer '
prov 2 lot
assert_one_error "lot" "export or signer"
prov 2 lot frobnicate
assert_one_error "frobnicate" "export or signer"
prov 2 lot signer extra
assert_one_error "extra"
prov 2 lot export
assert_one_error "LOT"

# ---- bad input first: nothing may be written
prov 5 lot export NO-SUCH-LOT --format csv --journal "$JOURNAL" --output nope.csv
assert_one_error "NO-SUCH-LOT" "$JOURNAL"
assert_nothing_written nope.csv
prov 5 lot export NO-SUCH-LOT --format aws --journal "$JOURNAL" --output nope-aws
assert_one_error "NO-SUCH-LOT"
assert_nothing_written nope-aws
prov 5 lot export NO-SUCH-LOT --format csv --journal "$JOURNAL" --output nope.csv --json
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["exit"]==5 and o["error"] and o["files"]==[], o' \
    "$PROV_OUT" || fail "--json of a failed export"
prov 2 lot export LOT-IT-1 --format xml --journal "$JOURNAL" --output x.xml
assert_one_error "xml"
assert_nothing_written x.xml
prov 2 lot export LOT-IT-1 --format aws --journal "$JOURNAL"
assert_one_error "--output"
prov 2 lot export LOT-IT-1 --format csv --journal no-such.sqlite
assert_one_error "no-such.sqlite"
mkdir taken && echo keep >taken/file
prov 6 lot export LOT-IT-1 --format aws --journal "$JOURNAL" --output taken
assert_one_error "taken"
assert_eq "$(dir_entries taken)" "file" "an existing directory is left as it was"

# ---- csv: header and every row against the certificates
prov 0 lot export LOT-IT-1 --format csv --journal "$JOURNAL" --output inventory.csv
assert_grep "$PROV_ERR" '4 devices exported as csv'
python3 - inventory.csv facts.txt <<'PY' || fail "csv inventory"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
want = ["serial", "cert_serial", "sha256", "pubkey_sha256", "state", "not_after", "lot",
        "revoked", "revoked_at"]
assert list(rows[0].keys()) == want, rows[0].keys()
facts = {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
assert sorted(r["serial"] for r in rows) == sorted(facts), (rows, facts)
for r in rows:
    assert [r["cert_serial"], r["sha256"], r["pubkey_sha256"], r["not_after"]] == facts[r["serial"]], r
    assert r["state"] == "proven" and r["lot"] == "LOT-IT-1", r
    assert r["revoked"] == "" and r["revoked_at"] == "", r
PY
# stdout without --output: the same bytes
prov 0 lot export LOT-IT-1 --format csv --journal "$JOURNAL"
cmp -s "$PROV_OUT" inventory.csv || fail "csv on stdout differs from --output"

# ---- json inventory
prov 0 lot export LOT-IT-1 --format json --journal "$JOURNAL" --output inventory.json --json
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["exit"]==0 and o["devices"]==4 and o["left_out"]==1 and o["format"]=="json", o' \
    "$PROV_OUT" || fail "--json summary"
python3 - inventory.json facts.txt <<'PY' || fail "json inventory"
import json, re, sys
o = json.load(open(sys.argv[1]))
assert set(o) == {"lot", "states", "count", "revocations_checked", "devices"}, o.keys()
assert o["lot"] == "LOT-IT-1" and o["states"] == ["stored", "proven"] and o["count"] == 4, o
assert o["revocations_checked"] is True, o
facts = {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
for d in o["devices"]:
    assert set(d) == {"serial", "cert_serial", "sha256", "pubkey_sha256", "state", "not_after"}, d
    assert re.fullmatch(r"[0-9a-f]{64}", d["sha256"]) and re.fullmatch(r"[0-9a-f]{64}", d["pubkey_sha256"]), d
    assert [d["cert_serial"], d["sha256"], d["pubkey_sha256"], d["not_after"]] == facts[d["serial"]], d
    assert d["state"] == "proven", d
assert sorted(d["serial"] for d in o["devices"]) == sorted(facts)
PY

# ---- --state: the journal's states pick the rows (all four rows are proven)
prov 5 lot export LOT-IT-1 --format csv --journal "$JOURNAL" --state issued --output none.csv
assert_one_error "LOT-IT-1" "--state"
assert_nothing_written none.csv
prov 0 lot export LOT-IT-1 --format csv --journal "$JOURNAL" --state all --output all.csv
cmp -s all.csv inventory.csv || fail "--state all: the failed row has no certificate and stays out"
prov 2 lot export LOT-IT-1 --format csv --journal "$JOURNAL" --state superseded
assert_one_error "superseded"

# ---- edge: what chain export writes
prov 0 lot export LOT-IT-1 --format edge --journal "$JOURNAL" --output edge.pem
prov 0 chain export --out chain-export.pem
assert_same_file edge.pem chain-export.pem
assert_eq "$(cert_count edge.pem)" 2 "edge: intermediate and root"

# ---- aws
prov 0 lot export LOT-IT-1 --format aws --journal "$JOURNAL" --output aws
assert_eq "$(dir_entries aws | tr '\n' ' ')" \
    "bulk-registration.jsonl provisioning-template.json register-ca-certificate.json " "aws files"
assert_mode 755 aws
assert_mode 644 aws/*
python3 - aws facts.txt ca/intermediate.crt <<'PY' || fail "aws bulk registration"
import json, re, subprocess, sys
d, facts = sys.argv[1], {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
inter = open(sys.argv[3]).read()
def fp(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                         capture_output=True, text=True, check=True).stdout
    return out.split("=")[1].strip().replace(":", "").lower()
# StartThingRegistrationTask: a newline-delimited JSON file, one object per thing, whose
# keys are the template's parameters; a thing name is [a-zA-Z0-9:_-]{1,128}.
tpl = json.load(open(d + "/provisioning-template.json"))
params = tpl["Parameters"]
assert set(tpl) == {"Parameters", "Resources"}, tpl.keys()
for name, p in params.items():
    assert p["Type"] == "String", p
refs = set(re.findall(r'"Ref": "([^"]+)"', json.dumps(tpl["Resources"])))
assert refs <= set(params), (refs, params)
types = sorted(r["Type"] for r in tpl["Resources"].values())
assert types == ["AWS::IoT::Certificate", "AWS::IoT::Thing"], types
cert = [r for r in tpl["Resources"].values() if r["Type"] == "AWS::IoT::Certificate"][0]
assert cert["Properties"]["Status"] in ("ACTIVE", "INACTIVE"), cert
assert set(cert["Properties"]) <= {"CertificateSigningRequest", "CertificateId", "CertificatePem",
                                   "CACertificatePem", "Status"}, cert
# an existing device certificate of a registered CA: CertificatePem (the CA is registered on
# its own, below, not passed again for every thing)
assert cert["Properties"]["CertificatePem"] == {"Ref": "CertificatePem"}, cert
assert "CACertificatePem" not in cert["Properties"] and "CACertificatePem" not in params, tpl
seen = set()
lines = open(d + "/bulk-registration.jsonl").read().split("\n")
assert lines[-1] == "", "the file ends with a newline"
for line in lines[:-1]:
    o = json.loads(line)
    assert set(o) == set(params), (o.keys(), params)
    assert re.fullmatch(r"[a-zA-Z0-9:_-]{1,128}", o["ThingName"]), o["ThingName"]
    assert o["SerialNumber"] in facts and o["ThingName"] == o["SerialNumber"], o
    assert fp(o["CertificatePem"]) == facts[o["SerialNumber"]][1], o["SerialNumber"]
    assert set(o) == {"ThingName", "SerialNumber", "CertificatePem"}, o.keys()
    seen.add(o["SerialNumber"])
assert seen == set(facts), (seen, facts)
# RegisterCACertificate (register-ca-certificate --cli-input-json): caCertificate required;
# certificateMode DEFAULT needs verificationCertificate, SNI_ONLY does not.
r = json.load(open(d + "/register-ca-certificate.json"))
assert set(r) <= {"caCertificate", "verificationCertificate", "setAsActive", "allowAutoRegistration",
                  "registrationConfig", "tags", "certificateMode"}, r.keys()
assert r["caCertificate"] == inter and len(r["caCertificate"]) <= 65536
assert r["certificateMode"] in ("DEFAULT", "SNI_ONLY")
assert r["certificateMode"] == "SNI_ONLY" or "verificationCertificate" in r
assert isinstance(r["setAsActive"], bool) and isinstance(r["allowAutoRegistration"], bool)
PY

# ---- azure-dps
prov 0 lot export LOT-IT-1 --format azure-dps --journal "$JOURNAL" --output dps
assert_eq "$(dir_entries dps | tr '\n' ' ')" "enrollment-group.json enrollments " "dps files"
python3 - dps facts.txt ca/intermediate.crt <<'PY' || fail "azure dps enrollments"
import glob, json, re, subprocess, sys
d, facts = sys.argv[1], {l.split()[0]: l.split()[1:] for l in open(sys.argv[2])}
inter = open(sys.argv[3]).read()
ID = r"[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?"
STATUS = ("enabled", "disabled")
def cert_field(att, kind):
    # AttestationMechanism: type x509, x509.<kind>.primary.certificate (X509CertificateWithInfo)
    assert set(att) <= {"type", "tpm", "x509", "symmetricKey"} and att["type"] == "x509", att
    x = att["x509"]
    assert set(x) <= {"clientCertificates", "signingCertificates", "caReferences"} and kind in x, x
    assert set(x[kind]) <= {"primary", "secondary"}, x[kind]
    assert set(x[kind]["primary"]) <= {"certificate", "info"}, x[kind]["primary"]
    return x[kind]["primary"]["certificate"]
def cn(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-nameopt", "multiline"],
                         input=pem, capture_output=True, text=True, check=True).stdout
    return re.search(r"commonName\s*=\s*(\S+)", out).group(1)
def fp(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                         capture_output=True, text=True, check=True).stdout
    return out.split("=")[1].strip().replace(":", "").lower()
# EnrollmentGroup: enrollmentGroupId and attestation required
g = json.load(open(d + "/enrollment-group.json"))
assert {"enrollmentGroupId", "attestation"} <= set(g), g.keys()
assert set(g) <= {"enrollmentGroupId", "attestation", "capabilities", "iotHubHostName", "initialTwin",
                  "etag", "provisioningStatus", "reprovisionPolicy", "allocationPolicy", "iotHubs",
                  "customAllocationDefinition", "deviceInformation"}, g.keys()
assert re.fullmatch(ID, g["enrollmentGroupId"]) and g["provisioningStatus"] in STATUS, g
assert cert_field(g["attestation"], "signingCertificates") == inter
# IndividualEnrollment: registrationId and attestation required; for X.509 the registration
# id is the certificate's CN
seen = set()
for f in sorted(glob.glob(d + "/enrollments/*.json")):
    e = json.load(open(f))
    assert {"registrationId", "attestation"} <= set(e), e.keys()
    assert set(e) <= {"registrationId", "deviceId", "attestation", "capabilities", "iotHubHostName",
                      "initialTwin", "etag", "provisioningStatus", "reprovisionPolicy",
                      "allocationPolicy", "iotHubs", "customAllocationDefinition",
                      "deviceInformation", "optionalDeviceInformation"}, e.keys()
    assert re.fullmatch(ID, e["registrationId"]) and e["provisioningStatus"] in STATUS, e
    pem = cert_field(e["attestation"], "clientCertificates")
    assert e["registrationId"] == cn(pem) and f.endswith("/" + e["registrationId"] + ".json"), f
    assert fp(pem) == facts[e["deviceId"]][1], e["deviceId"]
    seen.add(e["deviceId"])
assert seen == set(facts), (seen, facts)
PY

# ---- names the registries refuse: one line, exit 5, nothing written. A second lot (its own
# journal) whose serial holds a '.', a valid serial but no AWS thing name, and whose two
# devices share one CN, which DPS would take as one registration id.
token_init dev-names
printf 'serial,device,cn\nSN.1,pkcs11:token=dev-names,shared-cn\nSN-2,pkcs11:token=dev-names,Shared-CN\n' \
    >names.csv
prov 0 batch names.csv --no-progress
prov 5 lot export LOT-IT-1 --format aws --journal names.journal.sqlite --output names-aws
assert_one_error "SN.1" "thing name"
assert_nothing_written names-aws
prov 5 lot export LOT-IT-1 --format azure-dps --journal names.journal.sqlite --output names-dps
assert_one_error "SN.1" "SN-2" "registration id"
assert_nothing_written names-dps

# ---- revoked devices: the inventory says so, the cloud registries do not get them
prov 0 revoke SN-00002 --reason keyCompromise
prov 0 lot export LOT-IT-1 --format csv --journal "$JOURNAL" --output revoked.csv
python3 - revoked.csv <<'PY' || fail "csv inventory with a revoked device"
import csv, re, sys
rows = {r["serial"]: r for r in csv.DictReader(open(sys.argv[1], newline=""))}
assert len(rows) == 4, rows
assert rows["SN-00002"]["revoked"] == "keyCompromise", rows["SN-00002"]
assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rows["SN-00002"]["revoked_at"]), rows["SN-00002"]
assert all(r["revoked"] == "" for s, r in rows.items() if s != "SN-00002"), rows
PY
prov 0 lot export LOT-IT-1 --format json --journal "$JOURNAL" --output revoked.json
python3 - revoked.json <<'PY' || fail "json inventory with a revoked device"
import json, sys
o = json.load(open(sys.argv[1]))
assert o["count"] == 4 and o["revocations_checked"] is True, o
rv = {d["serial"]: d.get("revoked") for d in o["devices"]}
assert rv["SN-00002"]["reason"] == "keyCompromise" and rv["SN-00002"]["reason_code"] == 1, rv
assert [s for s, v in rv.items() if v is not None] == ["SN-00002"], rv
PY
prov 0 lot export LOT-IT-1 --format aws --journal "$JOURNAL" --output aws-revoked --json
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["devices"]==3 and o["left_out"]==2, o' \
    "$PROV_OUT" || fail "aws --json: the revoked device is left out"
assert_grep "$PROV_ERR" 'SN-00002: certificate [0-9a-f]+ revoked \(keyCompromise, ' \
    "a warning names the revoked device"
assert_eq "$(wc -l <aws-revoked/bulk-registration.jsonl)" 3 "aws: three devices"
if grep -q SN-00002 aws-revoked/bulk-registration.jsonl; then fail "aws: the revoked device is registered"; fi
prov 0 lot export LOT-IT-1 --format azure-dps --journal "$JOURNAL" --output dps-revoked
assert_eq "$(dir_entries dps-revoked/enrollments | wc -w)" 3 "azure-dps: three enrollments"
# a config whose CA directory has no index: nothing to check against, and the JSON says so
mkdir noindex
sed "s|^dir *=.*|dir = $WORK/noindex|" "$PROVISIONER_CONFIG" >noindex.cnf
grep -q "^dir = $WORK/noindex" noindex.cnf || fail "the test's config has no [ca] dir line to change"
PROVISIONER_CONFIG=$WORK/noindex.cnf prov 0 lot export LOT-IT-1 --format json --journal "$JOURNAL" \
    --output unchecked.json
python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); assert o["revocations_checked"] is False and all("revoked" not in d for d in o["devices"]), o' \
    unchecked.json || fail "json inventory without a CA index"
assert_no_file noindex/index.sqlite
