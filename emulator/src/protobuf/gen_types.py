"""Regenerates types.rs: `python3 gen_types.py > types.new && mv types.new types.rs`.

Reads k8s-pb 0.9 (messages, field order) and k8s-openapi 0.29 (JSON names) from the cargo registry.
Add kinds to `roots` (and to KINDS in protobuf.rs)."""
import re, glob, os, sys
PB = glob.glob(os.path.expanduser('~/.cargo/registry/src/*/k8s-pb-0.9.0/src'))[0]
OA = glob.glob(os.path.expanduser('~/.cargo/registry/src/*/k8s-openapi-0.29.0/src/v1_33'))[0]

# json names from k8s-openapi: "json" => Field::Key_snake
names = {}
conflicts = {}
for f in glob.glob(OA + '/**/*.rs', recursive=True):
    for js, snake in re.findall(r'"([A-Za-z0-9$]+)" => Field::Key_(\w+)', open(f).read()):
        snake = snake.removeprefix('r#')
        if snake in names and names[snake] != js:
            conflicts.setdefault(snake, set()).update({names[snake], js})
        names[snake] = js
def camel(s):
    p = s.split('_'); return p[0] + ''.join(x[:1].upper() + x[1:] for x in p[1:])

MODS = {
 'core': 'api/core/v1', 'apps': 'api/apps/v1', 'batch': 'api/batch/v1', 'coordination': 'api/coordination/v1',
 'events': 'api/events/v1', 'meta': 'apimachinery/pkg/apis/meta/v1', 'policy': 'api/policy/v1',
}
structs = {}  # (mod, name) -> [(field, proto_kind, type_text)]
for mod, path in MODS.items():
    src = open(f'{PB}/{path}/mod.rs').read()
    for m in re.finditer(r'pub struct (\w+) \{(.*?)\n\}', src, re.S):
        body = m.group(2) + "\n"
        fields = []
        for fm in re.finditer(r'#\[prost\(([^\]]*)\)\]\s*pub (r#)?(\w+):\s*([^;]*?),\n', body, re.S):
            fields.append((fm.group(3), fm.group(1), ' '.join(fm.group(4).split())))
        structs[(mod, m.group(1))] = fields

SPECIAL = {'Time', 'MicroTime', 'Quantity', 'IntOrString', 'RawExtension', 'FieldsV1', 'Duration', 'TypeMeta'}
def ref_types(type_text, mod):
    out = []
    for t in re.findall(r'((?:super::)*(?:[a-z_0-9]+::)*)([A-Z]\w+)', type_text):
        prefix, name = t
        if name in ('Option', 'Vec', 'String', 'BTreeMap'): continue
        if name in SPECIAL: continue
        # resolve module
        parts = [p for p in prefix.split('::') if p and p != 'super']
        if parts:
            key = {'v1': None}
            # find mod whose path ends with the given segments
            seg = '/'.join(parts)
            cands = [m for m, p in MODS.items() if p.endswith(seg)]
            if not cands:
                print('unresolved', type_text, file=sys.stderr); continue
            out.append((cands[0], name))
        else:
            out.append((mod, name))
    return out

roots = [('core','Namespace'),('core','Secret'),('core','ConfigMap'),('core','ServiceAccount'),('core','Service'),
 ('core','Pod'),('core','PodTemplate'),('batch','Job'),('batch','CronJob'),('coordination','Lease'),('core','Event'),
 ('events','Event'),('apps','Deployment'),('apps','StatefulSet'),('apps','DaemonSet'),('apps','ReplicaSet'),
 ('policy','PodDisruptionBudget'),('meta','Status')]
seen = []
stack = list(roots)
while stack:
    k = stack.pop()
    if k in seen: continue
    if k not in structs: print('missing', k, file=sys.stderr); continue
    seen.append(k)
    for f, attr, tt in structs[k]:
        stack.extend(ref_types(tt, k[0]))
seen.sort()
INLINE = {'volume_source', 'ephemeral_container_common', 'local_object_reference', 'persistent_volume_source'}
KEYWORDS = {'type', 'continue'}
out = []
for mod, name in seen:
    fs = []
    for f, attr, tt in structs[(mod, name)]:
        if (mod, name) == ('meta', 'ObjectMeta') and f == 'managed_fields':
            continue
        js = names.get(f, camel(f))
        if f == 'target_ww_ns':
            js = 'targetWWNs'
        rf = 'r#' + f if f in KEYWORDS else f
        if f in INLINE or (name == 'Probe' and f == 'handler'):
            fs.append('..' + rf)
        elif js != camel(f):
            fs.append(f'{rf} => "{js}"')
        else:
            fs.append(rf)
    out.append(f'json_message!({mod}::{name} {{ {", ".join(fs)} }});')
header = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'types.rs')).read()
header = header[:header.index('json_message!(')]
print(header + '\n'.join(out))
