/*
 * OpenSSH private keys in their decoded binary form ("openssh-key-v1\0" container), as
 * found in memory images, swap, key agents' dumps, or base64-decoded by other tools. The
 * text (PEM-armored) form is covered by the pattern rules openssh-private-key and
 * openssh-encrypted-private-key.
 *
 * Layout: "openssh-key-v1\0" | uint32 len | ciphername | uint32 len | kdfname | ...
 */

rule openssh_private_key_binary
{
    meta:
        id = "openssh-private-key-binary"
        name = "OpenSSH private key, binary openssh-key-v1 (unencrypted)"
        category = "private-key"
        severity = "critical"
        preview_prefix = 0
        description = "Magic 'openssh-key-v1\\0' followed by cipher name 'none' (uint32 length 4) and KDF 'none': the private key material follows in clear."

    strings:
        $plain = { 6F 70 65 6E 73 73 68 2D 6B 65 79 2D 76 31 00 00 00 00 04 6E 6F 6E 65 00 00 00 04 6E 6F 6E 65 }

    condition:
        $plain
}

rule openssh_private_key_binary_encrypted
{
    meta:
        id = "openssh-encrypted-private-key-binary"
        name = "OpenSSH private key, binary openssh-key-v1 (passphrase-protected)"
        category = "private-key"
        severity = "high"
        preview_prefix = 0
        description = "Magic 'openssh-key-v1\\0' followed by a cipher name of plausible length other than 'none' (aes256-ctr, chacha20-poly1305@openssh.com, ...) and KDF bcrypt; crackable offline."

    strings:
        $magic = { 6F 70 65 6E 73 73 68 2D 6B 65 79 2D 76 31 00 }

    condition:
        for any i in (1..#magic) : (
            uint32be(@magic[i] + 15) >= 5 and uint32be(@magic[i] + 15) <= 64
        )
}
