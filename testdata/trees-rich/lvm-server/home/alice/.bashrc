# ~/.bashrc: executed by bash(1) for non-login shells.
HISTCONTROL=ignoreboth
HISTSIZE=1000
PS1='\u@\h:\w\$ '
alias ll='ls -alF'
export EDITOR=vim
