"""Every run writes WORKDIR/run.json: one provenance entry per invocation, appended on resume, reset on overwrite."""

import json

from jst.run import provenance
from jst.run import workdir as workdir_lib


def test_each_invocation_is_appended_with_its_provenance(tmp_path):
    provenance.record_invocation(str(tmp_path), ['launch/main.py', '--config=configs/tiny.py'])
    content = provenance.record_invocation(str(tmp_path), ['launch/main.py', '--config=configs/tiny.py', '--x'])
    with open(tmp_path / 'run.json') as f:
        assert json.load(f) == content
    assert provenance.invocations(str(tmp_path)) == content['invocations']
    first, second = content['invocations']
    assert second['command'][1:] == ['launch/main.py', '--config=configs/tiny.py', '--x']
    assert len(first['commit']) in (0, 40) and (first['dirty'] is None) == (first['commit'] == '')
    assert first['packages']['jax'] and first['packages']['flax'] and 'tensorflow-datasets' in first['packages']
    assert first['devices']['platform'] == 'cpu' and first['devices']['count'] >= 1


def test_an_unreadable_run_file_is_replaced_and_says_so(tmp_path):
    assert provenance.invocations(str(tmp_path)) == []
    (tmp_path / 'run.json').write_text('{not json')
    assert provenance.invocations(str(tmp_path)) == []
    content = provenance.record_invocation(str(tmp_path), ['main.py'])
    assert content['unreadable_before'] and len(content['invocations']) == 1


def test_overwriting_a_run_discards_its_provenance(tmp_path):
    provenance.record_invocation(str(tmp_path), ['main.py'])
    workdir_lib.discard_run(str(tmp_path))
    assert not (tmp_path / 'run.json').exists()
