/* A binary marker followed by key material. */
rule demo_binary_key
{
    meta:
        id = "demo-binary-key"
        name = "Demo binary key"
        category = "private-key"
        severity = "critical"
        preview_prefix = 0
        description = "Magic 'DEMOKEY1' then a length byte."

    strings:
        $magic = { 44 45 4D 4F 4B 45 59 31 }

    condition:
        $magic at 0
}

rule demo_text_key
{
    meta:
        id = "demo-text-key"
        name = "Demo text key"
        category = "token"
        severity = "low"

    strings:
        $a = "demo-key-v1:" ascii wide

    condition:
        $a
}
