/*
 * Binary key stores and password databases, recognised by their file magic.
 *
 * The magic must sit at offset 0 of the scanned buffer (the start of the file), so these
 * rules are meant to run on whole files (or on the first chunk of a file), not on raw
 * unallocated space. Each rule also requires a structure that only appears when the store
 * really holds a private/secret key, so trust stores (Java cacerts, CA bundles) stay quiet.
 * meta.id is the rule's stable id (kebab-case, as for pattern rules); the examples file
 * names rules by that id.
 */

rule keepass_database
{
    meta:
        id = "keepass-database"
        name = "KeePass password database (KDBX / KDB)"
        category = "password"
        severity = "high"
        preview_prefix = 0
        description = "Signature 1 0x9AA2D903 then signature 2 0xB54BFB67 (KDBX 2-4), 0xB54BFB66 (KDBX pre-release) or 0xB54BFB65 (KeePass 1.x KDB). Encrypted with a master password / key file, so crackable offline."

    strings:
        $kdbx = { 03 D9 A2 9A 67 FB 4B B5 }
        $kdbx_pre = { 03 D9 A2 9A 66 FB 4B B5 }
        $kdb = { 03 D9 A2 9A 65 FB 4B B5 }

    condition:
        filesize > 12 and ($kdbx at 0 or $kdbx_pre at 0 or $kdb at 0)
}

rule password_safe_database
{
    meta:
        id = "password-safe-database"
        name = "Password Safe v3 database (psafe3)"
        category = "password"
        severity = "high"
        preview_prefix = 0
        description = "Password Safe / pwsafe v3 files start with the tag 'PWS3' followed by a 32-byte salt and the little-endian iteration count (2048 .. 2^24, which text never satisfies)."

    strings:
        $tag = "PWS3"

    condition:
        filesize > 72 and $tag at 0 and uint32(36) >= 2048 and uint32(36) <= 0x00FFFFFF
}

rule java_keystore_private_key
{
    meta:
        id = "java-keystore-private-key"
        name = "Java KeyStore (JKS) holding a private key"
        category = "private-key"
        severity = "high"
        preview_prefix = 0
        description = "JKS magic 0xFEEDFEED + version 1 or 2 at offset 0, and the OID 1.3.6.1.4.1.42.2.17.1.1 of Sun's key-protection algorithm, which appears only in PrivateKeyEntry records. Keystore passwords are very often 'changeit'."

    strings:
        $magic = { FE ED FE ED 00 00 00 0? }
        $sun_jks_key_protector = { 06 0A 2B 06 01 04 01 2A 02 11 01 01 }

    condition:
        $magic at 0 and (uint8(7) == 1 or uint8(7) == 2) and $sun_jks_key_protector
}

rule jceks_keystore_key
{
    meta:
        id = "jceks-keystore-key"
        name = "Java JCEKS keystore holding a private or secret key"
        category = "private-key"
        severity = "high"
        preview_prefix = 0
        description = "JCEKS magic 0xCECECECE + version 2 at offset 0, and either the PBEWithMD5AndTripleDES key-protection OID 1.3.6.1.4.1.42.2.19.1 (private key entries) or a Java serialization stream header AC ED 00 05 (SealedObject secret key entries)."

    strings:
        $magic = { CE CE CE CE 00 00 00 02 }
        $sun_jce_key_protector = { 06 09 2B 06 01 04 01 2A 02 13 01 }
        $java_serialized = { AC ED 00 05 }

    condition:
        $magic at 0 and ($sun_jce_key_protector or $java_serialized)
}

rule pkcs12_private_key
{
    meta:
        id = "pkcs12-private-key"
        name = "PKCS#12 / PFX file holding a private key"
        category = "private-key"
        severity = "high"
        preview_prefix = 0
        description = "PFX is a DER/BER SEQUENCE { INTEGER 3, ContentInfo { OID pkcs7-data ... } }. A key bag (pkcs-12 bag type 1.2.840.113549.1.12.10.1.1 keyBag or .2 pkcs8ShroudedKeyBag) must be present: OpenSSL, Java and Windows store the (password-encrypted) key there, while trust-only stores carry just certBags."

    strings:
        $pfx = { 30 8? [0-3] 02 01 03 30 8? [0-3] 06 09 2A 86 48 86 F7 0D 01 07 01 }
        $keybag = { 06 0B 2A 86 48 86 F7 0D 01 0C 0A 01 01 }
        $shrouded_keybag = { 06 0B 2A 86 48 86 F7 0D 01 0C 0A 01 02 }

    condition:
        $pfx at 0 and ($keybag or $shrouded_keybag)
}

rule gnupg_private_key
{
    meta:
        id = "gnupg-private-key"
        name = "GnuPG private key file (private-keys-v1.d)"
        category = "private-key"
        severity = "high"
        preview_prefix = 0
        description = "gpg-agent stores each secret key in ~/.gnupg/private-keys-v1.d/<keygrip>.key as a canonical S-expression '(11:private-key(' / '(21:protected-private-key(' / '(20:shadowed-private-key' (smartcard stub, not matched), with the key material as raw bytes. The extended 'Key: (private-key ...' text format (gpg >= 2.2.20) is the pattern rule gnupg-extended-private-key."

    strings:
        $csexp_plain = "(11:private-key("
        $csexp_protected = "(21:protected-private-key("

    condition:
        $csexp_plain at 0 or $csexp_protected at 0
}

rule kerberos_keytab
{
    meta:
        id = "kerberos-keytab"
        name = "Kerberos keytab"
        category = "private-key"
        severity = "high"
        preview_prefix = 0
        description = "MIT keytab (version 0x0502): long-term keys of host or service principals. The first entry's header is checked: a positive size, 1-8 principal components and a realm of 1-255 printable characters; whatever its file name, a copy authenticates as those principals."

    condition:
        filesize >= 32 and uint16be(0) == 0x0502 and
        uint32be(2) >= 16 and uint32be(2) <= 65536 and
        uint16be(6) >= 1 and uint16be(6) <= 8 and
        uint16be(8) >= 1 and uint16be(8) <= 255 and
        for all i in (10 .. 9 + uint16be(8)) : (uint8(i) >= 0x21 and uint8(i) <= 0x7e)
}
